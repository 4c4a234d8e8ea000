"""medboost: does a frozen language-model layer boost biomedical image classifiers?

Layout: ``tasks`` (MedMNIST names and metadata), ``data`` (download, load, augment), ``recipes``
(YAML schema), ``models`` (backbone -> booster -> head), ``engine`` (train/evaluate), ``metrics``,
``results`` (Parquet rows) and ``cli`` (the thin ``medboost`` command).
"""

__version__ = "0.1.0"
