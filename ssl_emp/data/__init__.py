"""Stage 1 of the data flow: indexed data sets, ``(index, uint8 image)`` per training sample.

``load_data`` builds a run's splits (training set, labelled kNN bank, test set) of sources
(``source``: the contract every data set follows); ``folder`` reads image folders and archives
(``decode`` their images), ``hf`` Hugging Face data sets, ``views`` cuts photographs' views,
``junk`` and ``redundancy`` build the probes' training sets.
"""

from ssl_emp.data.datasets import DataSplits, IndexedImageFiles, IndexedImages, Labelled, PackedImages
from ssl_emp.data.load import check_classes, load_data, load_split
from ssl_emp.data.source import ImageSource

__all__ = ["DataSplits", "ImageSource", "IndexedImageFiles", "IndexedImages", "Labelled", "PackedImages", "check_classes",
           "load_data", "load_split"]
