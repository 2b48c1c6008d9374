"""Synthetic Rakuten-like products in the official CSV layout, deterministic per seed.

Text looks like the real catalogue: Title Case designations with brands, model numbers and
dimensions; descriptions with HTML tags and entities, empty at about the real rate; a few
English/German rows and some encoding damage (``c¿ur``, ``Ã©``). Neighbour classes share
vocabulary (``vocabulary.GROUPS``), so a linear model lands in a realistic F1 band.
Drift knobs shift one aspect at a time, for monitoring demos and tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_mlops.data.categories import class_prior
from rakuten_mlops.data.sources import X_FILE, Y_FILE
from rakuten_mlops.data.vocabulary import (
    COLORS,
    FOREIGN_SENTENCES,
    GENERIC_FR,
    GENERIC_SENTENCES,
    GROUP_CONFUSION,
    GROUPS,
    NOVEL_NOUNS,
    NOVEL_SYLLABLES,
    RANDOM_CONFUSION,
    VOCAB,
)

DRIFT_KINDS = ("class-prior", "vocabulary", "length", "language")
# Rare classes that the class-prior knob inflates: the predicted-class mix visibly moves.
PRIOR_SHIFT_CLASSES = (60, 1301, 1940, 2220, 2905)
FOREIGN_RATE = 0.04
MOJIBAKE_RATE = 0.03
HTML_RATE = 0.45


@dataclass(frozen=True)
class GenerationResult:
    rows: int
    seconds: float
    x_path: Path
    y_path: Path


def _neighbours() -> dict[int, tuple[int, ...]]:
    out: dict[int, set[int]] = {code: set() for code in VOCAB}
    for group in GROUPS:
        for code in group:
            out[code].update(c for c in group if c != code)
    return {code: tuple(sorted(n)) for code, n in out.items()}


def _pick(rng: np.random.Generator, items: tuple[str, ...], n: int) -> np.ndarray:
    return np.asarray(items, dtype=object)[rng.integers(0, len(items), size=n)]


def _model_number(rng: np.random.Generator, n: int) -> np.ndarray:
    letters = np.array(list("ABCDEFGHJKLMNPRSTVWXZ"))
    a = letters[rng.integers(0, len(letters), size=(n, 2))]
    digits = rng.integers(10, 99999, size=n)
    return np.array([f"{x[0]}{x[1]}{d}" for x, d in zip(a, digits, strict=True)], dtype=object)


def _novel_words(rng: np.random.Generator, n: int) -> np.ndarray:
    syl = np.asarray(NOVEL_SYLLABLES, dtype=object)
    idx = rng.integers(0, len(syl), size=(n, 3))
    return np.array([(syl[i[0]] + syl[i[1]] + syl[i[2]]).capitalize() for i in idx], dtype=object)


def _class_probabilities(drift: str | None, strength: float) -> tuple[np.ndarray, np.ndarray]:
    prior = class_prior()
    codes = np.array(sorted(prior), dtype=np.int64)
    probs = np.array([prior[c] for c in codes])
    if drift == "class-prior":
        peaked = np.array([1.0 if c in PRIOR_SHIFT_CLASSES else 0.0 for c in codes])
        probs = (1 - strength) * probs + strength * peaked / peaked.sum()
    return codes, probs / probs.sum()


def _damage(text: str, rng_value: float) -> str:
    """Encoding damage as found in the official file (``¿`` for œ/', double-encoded UTF-8)."""
    if rng_value < 0.5:
        return text.replace("œ", "¿").replace("'", "¿", 1)
    return text.replace("é", "Ã©", 1).replace("è", "Ã¨", 1)


def _htmlise(sentences: list[str], style: int) -> str:
    if style == 0:
        return " ".join(sentences)
    if style == 1:
        return "<br />".join(sentences)
    if style == 2:
        return "<p>" + "</p><p>".join(sentences) + "</p>"
    return "<ul><li>" + "</li><li>".join(sentences) + "</li></ul>"


def generate_frame(
    rows: int,
    seed: int = 42,
    *,
    drift: str | None = None,
    drift_strength: float = 0.5,
    first_productid: int | None = None,
) -> pd.DataFrame:
    """Products with columns designation, description, productid, imageid, prdtypecode."""
    if drift is not None and drift not in DRIFT_KINDS:
        raise ValueError(f"unknown drift kind {drift!r}; expected one of {DRIFT_KINDS}")
    s = float(np.clip(drift_strength, 0.0, 1.0)) if drift else 0.0
    rng = np.random.default_rng(seed)
    codes, probs = _class_probabilities(drift, s)
    labels = rng.choice(codes, size=rows, p=probs)
    neighbours = _neighbours()
    all_codes = tuple(VOCAB)

    # Which class's vocabulary each row's product noun comes from (confusion with neighbours).
    u = rng.random(rows)
    pick = rng.integers(0, 1 << 30, size=rows)
    noun_class = labels.copy()
    for i in np.flatnonzero(u < GROUP_CONFUSION + RANDOM_CONFUSION):
        pool = neighbours[int(labels[i])] if u[i] < GROUP_CONFUSION else all_codes
        if pool:
            noun_class[i] = pool[pick[i] % len(pool)]

    foreign_rate = FOREIGN_RATE + (0.8 * s if drift == "language" else 0.0)
    is_foreign = rng.random(rows) < foreign_rate
    novel = rng.random(rows) < (0.9 * s if drift == "vocabulary" else 0.0)
    length_factor = 1.0 + (5.0 * s if drift == "length" else 0.0)

    model_no = _model_number(rng, rows).tolist()
    colors = _pick(rng, COLORS, rows).tolist()
    generic = _pick(rng, GENERIC_FR, rows).tolist()
    novel_words = _novel_words(rng, rows).tolist()
    novel_nouns = _pick(rng, NOVEL_NOUNS, rows).tolist()
    dims = rng.integers(10, 300, size=(rows, 2)).tolist()
    template = rng.integers(0, 4, size=rows).tolist()
    html_style = rng.integers(0, 4, size=rows).tolist()
    damage = rng.random(rows).tolist()
    empty_draw = rng.random(rows).tolist()
    n_sentences = rng.integers(1, 5, size=rows).tolist()
    draws = rng.integers(0, 1 << 30, size=(rows, 5)).tolist()
    gen_idx = rng.integers(0, len(GENERIC_SENTENCES), size=rows).tolist()
    labels_l, noun_class_l = labels.tolist(), noun_class.tolist()
    is_foreign_l, novel_l = is_foreign.tolist(), novel.tolist()
    designation: list[str] = [""] * rows
    description: list[str] = [""] * rows

    for i in range(rows):
        own = VOCAB[labels_l[i]]
        # A confused row is described with its neighbour's words: genuinely ambiguous, as in reality.
        nv = VOCAB[noun_class_l[i]]
        d = draws[i]
        noun = nv.nouns[d[0] % len(nv.nouns)]
        attr = nv.attributes[d[1] % len(nv.attributes)]
        brand = (own if d[2] % 3 else nv).brands[d[2] % len((own if d[2] % 3 else nv).brands)]
        if is_foreign_l[i]:
            noun = nv.foreign[d[0] % len(nv.foreign)]
        if novel_l[i]:
            noun = f"{novel_nouns[i]} {novel_words[i]}"
            brand = novel_words[(i + 1) % rows]
        t = template[i]
        if own.style == "magazine":
            title = f"{noun} {attr} - {brand}" if t % 2 else f"{noun} {attr}"
        elif own.style == "book":
            title = f"{noun} - {brand}" if t == 0 else (f"{noun} ({attr})" if t == 1 else noun)
        elif own.style == "card":
            title = f"{noun} {brand} - {attr} - {model_no[i][-3:]}/{dims[i][0]}"
        elif t == 0:
            title = f"{noun} {attr} {colors[i]} - {brand}"
        elif t == 1:
            title = f"{brand} {noun} {attr} {dims[i][0]} X {dims[i][1]} Cm"
        elif t == 2:
            title = f"{generic[i]} {noun} {attr} {model_no[i]}"
        else:
            title = f"{noun} {brand} {model_no[i]} {colors[i]}"

        if empty_draw[i] < own.empty_description_rate / length_factor:
            desc = ""
        else:
            k = min(len(nv.sentences), int(round(n_sentences[i] * length_factor)))
            pool = FOREIGN_SENTENCES if is_foreign_l[i] else nv.sentences
            start = d[3] % len(pool)
            sentences = [pool[(start + m) % len(pool)] for m in range(k)]
            if not is_foreign_l[i]:
                sentences.insert(0, f"{noun} {brand} {attr.lower()}.")
                sentences.append(GENERIC_SENTENCES[gen_idx[i]])
            if length_factor > 1:
                sentences *= int(length_factor)
            style = html_style[i]
            desc = _htmlise(sentences, style if damage[i] < HTML_RATE * 2 else 0)
            if style >= 2:
                desc = desc.replace("'", "&#39;").replace("é", "&eacute;", 1)
        if damage[i] < MOJIBAKE_RATE:
            title, desc = _damage(title, damage[i] / MOJIBAKE_RATE), _damage(desc, damage[i] / MOJIBAKE_RATE)
        designation[i] = title
        description[i] = desc

    base = first_productid if first_productid is not None else 100_000_000 * (1 + seed % 10_000)
    productid = base + rng.permutation(rows).astype(np.int64) * 7 + 1
    imageid = rng.integers(900_000_000, 1_400_000_000, size=rows, dtype=np.int64)
    return pd.DataFrame(
        {
            "designation": designation,
            "description": description,
            "productid": productid,
            "imageid": imageid,
            "prdtypecode": labels.astype(np.int64),
        }
    )


def write_official_layout(frame: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """Write X_train_update.csv and Y_train_CVw08PX.csv exactly as the challenge ships them."""
    out.mkdir(parents=True, exist_ok=True)
    x_path, y_path = out / X_FILE, out / Y_FILE
    index = pd.RangeIndex(len(frame))
    x = frame[["designation", "description", "productid", "imageid"]].set_index(index)
    x.to_csv(x_path, index=True, encoding="utf-8")
    frame[["prdtypecode"]].set_index(index).to_csv(y_path, index=True, encoding="utf-8")
    return x_path, y_path


def generate_to_dir(
    out: Path,
    *,
    rows: int,
    seed: int = 42,
    drift: str | None = None,
    drift_strength: float = 0.5,
    first_productid: int | None = None,
) -> GenerationResult:
    start = time.perf_counter()
    frame = generate_frame(
        rows, seed, drift=drift, drift_strength=drift_strength, first_productid=first_productid
    )
    x_path, y_path = write_official_layout(frame, Path(out))
    return GenerationResult(rows, time.perf_counter() - start, x_path, y_path)
