"""Sizes shared by the scoring tests and their fixtures."""

CATALOGUE_ROWS = 1_000
CHUNK_ROWS = 300  # four chunks, the last one short
