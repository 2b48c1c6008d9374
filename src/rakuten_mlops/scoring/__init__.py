"""Batch scoring of whole catalogues with a registry version (``rakuten-mlops score``)."""
