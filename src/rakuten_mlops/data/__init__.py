"""Datasets: the official Rakuten files, the synthetic generator, incremental loading and status."""
