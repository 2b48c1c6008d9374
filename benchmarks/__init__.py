"""Benchmarks (`make bench`): every number is reported with a peer measured in the same script."""
