"""Stage 1 of the data flow: indexed data sets, ``(index, uint8 image)`` per training sample.

``load_data`` builds a run's splits (training set, labelled kNN bank, test set); ``folder`` reads
image folders and archives (``decode`` their images), ``junk`` and ``redundancy`` build the probes' training sets.
"""

from ssl_emp.data.datasets import DataSplits, IndexedImageFiles, IndexedImages, Labelled
from ssl_emp.data.load import check_classes, load_data, load_split

__all__ = ["DataSplits", "IndexedImageFiles", "IndexedImages", "Labelled", "check_classes", "load_data", "load_split"]
