"""Batch scoring of whole catalogues with a registry version (``rakuten-mlops score``)."""

DEFAULT_CHUNK_ROWS = 10_000
DEFAULT_TOP_K = 3
