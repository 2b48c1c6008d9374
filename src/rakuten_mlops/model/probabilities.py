"""The probability vector of one prediction, stored compactly in the prediction log.

Layout (little-endian, ``LOGGED_TOP_K`` entries): the class codes of the most probable classes
(uint16, best first) then their probabilities (float16). The mass left over,
``1 - sum(top probabilities)``, belongs to the other classes; :func:`expand` spreads it evenly
over them, which is what the performance estimate needs (it reads only the top class and how
much probability the row gives each class).

Self-describing (codes, not column positions), so a row can be read without loading the model
version that wrote it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

LOGGED_TOP_K = 5
_PACK = struct.Struct(f"<{LOGGED_TOP_K}H{LOGGED_TOP_K}e")
ENCODED_BYTES = _PACK.size
FEW_ROWS = 8  # fewer rows are packed one by one: the columns' set-up costs more than it saves


def encode(codes: Sequence[int], probabilities: Sequence[float]) -> bytes:
    """One row's top classes (best first) as ``ENCODED_BYTES`` bytes; a model with fewer than
    ``LOGGED_TOP_K`` classes pads with code 0 at probability 0."""
    if len(codes) >= LOGGED_TOP_K:
        return _PACK.pack(*codes[:LOGGED_TOP_K], *probabilities[:LOGGED_TOP_K])
    pad = LOGGED_TOP_K - len(codes)
    return _PACK.pack(*codes, *[0] * pad, *probabilities, *[0.0] * pad)


def encode_many(codes: Sequence[Sequence[int]], probabilities: Sequence[Sequence[float]]) -> list[bytes]:
    """:func:`encode` of every row (a batch of rows of at least ``LOGGED_TOP_K`` entries is packed
    column by column, without a Python call per row)."""
    if len(codes) < FEW_ROWS or min(map(len, codes)) < LOGGED_TOP_K:
        return [encode(c, p) for c, p in zip(codes, probabilities, strict=True)]
    columns = [*zip(*codes, strict=False)][:LOGGED_TOP_K] + [*zip(*probabilities, strict=False)][
        :LOGGED_TOP_K
    ]
    return list(map(_PACK.pack, *columns))


def decode_many(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Codes (rows x k, int64) and probabilities (rows x k, float64) of encoded rows."""
    if not blobs:
        return np.empty((0, LOGGED_TOP_K), dtype=np.int64), np.empty((0, LOGGED_TOP_K))
    raw = np.frombuffer(b"".join(bytes(b) for b in blobs), dtype=np.uint8).reshape(len(blobs), -1)
    k = LOGGED_TOP_K
    codes = raw[:, : 2 * k].copy().view("<u2").astype(np.int64)
    probabilities = raw[:, 2 * k :].copy().view("<f2").astype(np.float64)
    return codes, probabilities


def expand(codes: np.ndarray, probabilities: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Rows x ``classes`` probability matrix: the logged top classes, the rest of the mass spread
    evenly over the classes not logged for that row. Codes outside ``classes`` are dropped."""
    classes = np.asarray(sorted(classes), dtype=np.int64)
    n, k = codes.shape
    column = np.searchsorted(classes, codes)
    known = (column < len(classes)) & (classes[np.minimum(column, len(classes) - 1)] == codes)
    proba = np.zeros((n, len(classes)))
    rows = np.repeat(np.arange(n), k)
    mask = known.ravel()
    proba[rows[mask], column.ravel()[mask]] = probabilities.ravel()[mask]
    rest = np.clip(1.0 - proba.sum(axis=1), 0.0, None)
    unlogged = proba == 0
    share = rest / np.maximum(unlogged.sum(axis=1), 1)
    proba += unlogged * share[:, None]
    return proba / proba.sum(axis=1, keepdims=True)
