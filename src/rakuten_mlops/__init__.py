"""Rakuten France product classification MLOps platform."""

__version__ = "0.1.0"
