"""Data curation on an encoder's embeddings: SemDeDup (Abbas et al. 2023) and self-supervised
prototypes (Sorscher et al. 2022), both on faiss' spherical k-means.

``semdedup_keep`` and ``prototype_keep`` are pure functions of the embeddings; ``ssl-emp curate``
(``ssl_emp.curate.command``) embeds a training split, runs one of them and writes the kept indices
that ``--set data.keep_file=...`` trains on.
"""

from ssl_emp.curate.prototypes import prototype_keep
from ssl_emp.curate.semdedup import semdedup_keep

__all__ = ["prototype_keep", "semdedup_keep"]
