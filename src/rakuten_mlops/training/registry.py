"""The model registry side: the promotion gate (compare-and-set under a database lock), forced
promotions, rollback from the recorded history, and listings.

Gate rule: a version takes the alias ``production`` only if its weighted F1 on the
current test split is >= ``RAKUTEN_MIN_F1`` and >= the current production version's weighted F1,
re-computed on that SAME test split, + ``RAKUTEN_MIN_GAIN``, and its probabilities are calibrated:
its expected calibration error on that split, above what sampling alone explains (see
:mod:`rakuten_mlops.model.calibration`), is <= ``RAKUTEN_MAX_ECE`` (the performance estimate
reads those probabilities).

Concurrency: the scores are computed outside the lock (seconds), then the decision is applied
under the ``registry_locks`` row lock (``SELECT ... FOR UPDATE`` on Postgres, ``BEGIN IMMEDIATE``
on SQLite) only if production is still the version that was scored against; otherwise the gate
re-scores against the new production version. Two trainings promoting at once therefore never
leave the worse one in production. The decision's ``model_events`` row is written in the same
locked transaction, so the recorded history always matches the alias moves.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from rakuten_mlops.errors import ModelNotFoundError, PromotionRefused
from rakuten_mlops.registry import AliasChanged, AliasTransaction, ModelRegistry, registry_errors
from rakuten_mlops.settings import Settings
from rakuten_mlops.training.dataset import LabelledSplit, load_test_set

MAX_GATE_ATTEMPTS = 5
HISTORY_EVENTS = ("promoted", "forced", "rollback", "recovered")
RESTORING_EVENTS = ("rollback", "recovered")  # they name the version found or put back in production
#: Tag of a version a rollback put back in production, set once the rollback is recorded.
ROLLBACK_TAG = "rollback_reason"
VERSION_TAGS = (
    "f1_weighted",
    "f1_macro",
    "accuracy",
    "train_rows",
    "test_rows",
    "batch_ids",
    "dataset_digest",
    "git_sha",
    "package_version",
    "gate_decision",
    "gate_reason",
)

_scores: dict[tuple[str, str, str, str], float] = {}
_calibration: dict[tuple[str, str, str, str], float] = {}
_scores_lock = threading.Lock()


@dataclass
class GateDecision:
    """What the gate decided for one version, with both scores and the reasons."""

    version: str
    decision: str  # promoted | rejected
    candidate_f1: float | None
    production_version: str | None  # production before the decision
    production_f1: float | None
    min_f1: float
    min_gain: float
    reasons: list[str] = field(default_factory=list)
    candidate_ece: float | None = None  # calibration error above the sampling floor
    max_ece: float | None = None
    forced: bool = False
    reason: str | None = None  # the human's reason of a forced promotion
    test_rows: int = 0
    test_digest: str = ""
    actor: str = "cli"

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "promoted": self.promoted}

    def describe(self) -> str:
        verb = "PROMOTED (forced)" if self.forced else self.decision.upper()
        prod = (
            f"production v{self.production_version} {_fmt(self.production_f1)}"
            if self.production_version
            else "no production version before"
        )
        lines = [
            f"gate: version {self.version} {verb}: candidate weighted F1 {_fmt(self.candidate_f1)} vs {prod} "
            f"(same test set: {self.test_rows:,} rows, digest {self.test_digest})"
        ]
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)


@dataclass
class RollbackResult:
    from_version: str | None
    to_version: str
    reason: str
    actor: str

    @property
    def version(self) -> str:
        """The version now in production."""
        return self.to_version

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "version": self.to_version}

    def describe(self) -> str:
        return f"rollback: production moved from version {self.from_version} to version {self.to_version} ({self.reason})"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# --- the gate rule ------------------------------------------------------------------------


def gate_rule(
    candidate_f1: float,
    production_f1: float | None,
    production_version: str | None,
    min_f1: float,
    min_gain: float,
    *,
    ece: float | None = None,
    max_ece: float | None = None,
) -> tuple[bool, list[str]]:
    """(passes, reasons) of the promotion rule; pure so it can be read and tested on its own.

    ``ece`` is the candidate's calibration error above the sampling floor; the calibration rule
    applies when both it and ``max_ece`` are given."""
    reasons: list[str] = []
    passes = True
    if candidate_f1 >= min_f1:
        reasons.append(f"weighted F1 {candidate_f1:.4f} >= RAKUTEN_MIN_F1 {min_f1:.4f}")
    else:
        passes = False
        reasons.append(f"weighted F1 {candidate_f1:.4f} < RAKUTEN_MIN_F1 {min_f1:.4f}")
    if production_version is None or production_f1 is None:
        reasons.append("no production version yet")
    else:
        bar = production_f1 + min_gain
        relation = ">=" if candidate_f1 >= bar else "<"
        passes = passes and candidate_f1 >= bar
        reasons.append(
            f"weighted F1 {candidate_f1:.4f} {relation} production v{production_version} {production_f1:.4f}"
            f" + RAKUTEN_MIN_GAIN {min_gain:.4f}"
        )
    if ece is not None and max_ece is not None:
        relation = "<=" if ece <= max_ece else ">"
        passes = passes and ece <= max_ece
        reasons.append(
            f"calibration error {ece:.4f} (ECE above the sampling floor) {relation} RAKUTEN_MAX_ECE {max_ece:.4f}"
        )
    return passes, reasons


# --- registry reads -----------------------------------------------------------------------


def _key(settings: Settings, version: str, test: LabelledSplit) -> tuple[str, str, str, str]:
    return (settings.mlflow_tracking_uri, settings.registered_model, str(version), test.digest)


def _measure(settings: Settings, version: str, test: LabelledSplit) -> None:
    """Weighted F1 and calibration error of a registered version on ``test``, into the caches.

    A value already there (remembered from the training run's own evaluation) is kept."""
    from rakuten_mlops.model.loading import load_pipeline, model_uri
    from rakuten_mlops.training.evaluate import calibration_of, weighted_f1

    pipeline = load_pipeline(model_uri(settings.registered_model, version=str(version)))
    score, ece = weighted_f1(pipeline, test), calibration_of(pipeline, test).excess
    with _scores_lock:
        _scores.setdefault(_key(settings, version, test), score)
        _calibration.setdefault(_key(settings, version, test), ece)


def score_version(settings: Settings, version: str, test: LabelledSplit) -> float:
    """Weighted F1 of a registered version on ``test`` (versions are immutable: cached by digest)."""
    with _scores_lock:
        if _key(settings, version, test) in _scores:
            return _scores[_key(settings, version, test)]
    _measure(settings, version, test)
    return _scores[_key(settings, version, test)]


def calibration_error(settings: Settings, version: str, test: LabelledSplit) -> float:
    """ECE of a registered version on ``test`` above the sampling floor (cached like the score)."""
    with _scores_lock:
        if _key(settings, version, test) in _calibration:
            return _calibration[_key(settings, version, test)]
    _measure(settings, version, test)
    return _calibration[_key(settings, version, test)]


def remember_score(
    settings: Settings, version: str, test: LabelledSplit, score: float, ece: float | None = None
) -> None:
    """Record a score (and calibration error) computed elsewhere (the training run's own evaluation)."""
    with _scores_lock:
        _scores[_key(settings, version, test)] = score
        if ece is not None:
            _calibration[_key(settings, version, test)] = ece


# --- promotion ----------------------------------------------------------------------------


def promote(
    settings: Settings,
    version: str | int,
    *,
    force: bool = False,
    reason: str | None = None,
    actor: str = "cli",
) -> GateDecision:
    """Run the gate for ``version`` (or force it, with a reason) and move ``production`` if it passes.

    Every decision is written to ``model_events`` and to the version's tags. A refusal is a
    normal outcome (``decision == "rejected"``), not an exception.
    """
    version = str(version)
    if force and not (reason and reason.strip()):
        raise PromotionRefused('a forced promotion needs a reason: --force --reason "why"')
    registry = ModelRegistry(settings)
    registry.version(version)
    test = load_test_set(settings)
    for _attempt in range(MAX_GATE_ATTEMPTS):
        expected = registry.production_version()
        with registry_errors(settings):  # scoring downloads the models
            decision = _decide(settings, version, expected, test, force=force, reason=reason, actor=actor)
        with registry.locked() as txn:
            if txn.current != expected:
                continue  # production moved while we scored: score again against the new one
            _apply(txn, decision)
        if decision.production_version != decision.version:
            registry.tag(version, _gate_tags(decision))  # after the commit: see _gate_tags
        return decision
    raise PromotionRefused(
        f"production changed {MAX_GATE_ATTEMPTS} times while version {version} was being scored; try again"
    )


def _decide(
    settings: Settings,
    version: str,
    expected: str | None,
    test: LabelledSplit,
    *,
    force: bool,
    reason: str | None,
    actor: str,
) -> GateDecision:
    candidate_f1 = score_version(settings, version, test)
    candidate_ece = calibration_error(settings, version, test)
    production_f1 = None
    if expected is not None and expected != version:
        try:
            production_f1 = score_version(settings, expected, test)
        except Exception as exc:
            if not force:
                raise PromotionRefused(
                    f"cannot re-score production version {expected} on the current test set ({exc}); "
                    'the gate cannot compare. Use --force --reason "..." to override.'
                ) from exc
    common = dict(
        version=version,
        candidate_f1=candidate_f1,
        production_version=expected,
        production_f1=production_f1,
        min_f1=settings.min_f1,
        min_gain=settings.min_gain,
        candidate_ece=candidate_ece,
        max_ece=settings.max_ece,
        test_rows=len(test),
        test_digest=test.digest,
        actor=actor,
    )
    if expected == version:
        return GateDecision(
            decision="promoted", reasons=[f"version {version} is already in production"], **common
        )
    passes, reasons = gate_rule(
        candidate_f1, production_f1, expected, settings.min_f1, settings.min_gain,
        ece=candidate_ece, max_ece=settings.max_ece,
    )  # fmt: skip
    if force:
        note = "gate would pass" if passes else "gate would refuse"
        return GateDecision(
            decision="promoted", forced=True, reason=reason, reasons=[f"forced by {actor}: {reason}", f"{note}:", *reasons], **common
        )  # fmt: skip
    return GateDecision(decision="promoted" if passes else "rejected", reasons=reasons, **common)


def _gate_tags(decision: GateDecision) -> dict[str, str]:
    """The decision as version tags, set once its ``model_events`` row (and alias move) committed,
    ``gate_decision`` last: a job killed on the way leaves the earlier tag (``registered``), never
    a version tagged promoted whose promotion is not recorded."""
    return {
        "gate_reason": "; ".join(decision.reasons)[:4900],
        "gate_candidate_f1": _fmt(decision.candidate_f1),
        "gate_production_version": decision.production_version or "",
        "gate_production_f1": _fmt(decision.production_f1),
        "gate_candidate_ece": _fmt(decision.candidate_ece),
        "gate_test_digest": decision.test_digest,
        "gate_actor": decision.actor,
        "gate_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "gate_decision": "forced" if decision.forced else decision.decision,
    }


def _apply(txn: AliasTransaction, decision: GateDecision) -> None:
    """The model_events row and the alias move, last (inside the registry lock)."""
    if decision.production_version == decision.version:
        return
    label = "forced" if decision.forced else decision.decision
    txn.record(
        label,
        version=decision.version,
        previous_version=decision.production_version,
        decision=decision.decision,
        candidate_f1=decision.candidate_f1,
        production_f1=decision.production_f1,
        reason=decision.reason if decision.forced else "; ".join(decision.reasons),
        actor=decision.actor,
        details={
            "reasons": decision.reasons,
            "min_f1": decision.min_f1,
            "min_gain": decision.min_gain,
            "candidate_ece": decision.candidate_ece,
            "max_ece": decision.max_ece,
            "test_rows": decision.test_rows,
            "test_digest": decision.test_digest,
            "forced": decision.forced,
        },
    )
    if decision.promoted:
        txn.move(decision.version)  # last: a failed move rolls the row back with it


# --- rollback -----------------------------------------------------------------------------


def production_history(conn, model_name: str) -> list[str]:
    """The stack of production versions replayed from ``model_events`` (oldest first).

    A promotion pushes its version; a rollback to a version already on the stack pops back to
    it (so repeated rollbacks walk further back), to any other version pushes it.
    """
    from sqlalchemy import select

    from rakuten_mlops.db.models import ModelEvent

    rows = conn.execute(
        select(ModelEvent.event_type, ModelEvent.version, ModelEvent.decision)
        .where(ModelEvent.model_name == model_name, ModelEvent.event_type.in_(HISTORY_EVENTS))
        .order_by(ModelEvent.id)
    ).all()
    stack: list[str] = []
    for event_type, version, decision in rows:
        if not version or (event_type not in RESTORING_EVENTS and decision != "promoted"):
            continue
        if event_type in RESTORING_EVENTS and version in stack:
            del stack[len(stack) - stack[::-1].index(version) :]
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


def _previous_in(stack: list[str], current: str | None) -> str | None:
    if current in stack:
        below = stack[: len(stack) - stack[::-1].index(current) - 1]
        below = [v for v in below if v != current]
        return below[-1] if below else None
    return stack[-1] if stack else None


def rollback(
    settings: Settings,
    *,
    to: str | int | None = None,
    reason: str = "manual rollback",
    actor: str = "cli",
) -> RollbackResult:
    """Move ``production`` back to the previous production version (or to ``to``), recorded."""
    registry = ModelRegistry(settings)
    name = settings.registered_model
    if to is not None:
        registry.version(str(to))
    for _attempt in range(MAX_GATE_ATTEMPTS):
        current = registry.production_version()
        target = str(to) if to is not None else _previous_in(_history(settings), current)
        if target is None:
            raise ModelNotFoundError(
                f"no earlier production version of {name} is recorded: nothing to roll back to "
                "(use --to VERSION to pick one)"
            )
        if target == current:
            raise PromotionRefused(f"version {target} is already in production: nothing to roll back")
        try:
            registry.move_alias(
                target,
                current,
                reason,
                actor,
                tags={ROLLBACK_TAG: reason[:4900]},
                details={"requested": None if to is None else str(to)},
            )
        except AliasChanged:
            continue  # another writer moved production meanwhile: decide again from the new state
        return RollbackResult(from_version=current, to_version=target, reason=reason, actor=actor)
    raise PromotionRefused(f"production changed {MAX_GATE_ATTEMPTS} times during the rollback; try again")


def record_unrecorded_move(settings: Settings, actor: str = "doctor") -> str | None:
    """Record the alias where it is when the production history ends elsewhere: the trace of a
    job killed after moving the alias and before committing its ``model_events`` row.

    Under the registry lock; the alias is not moved (it is what the API serves), the history is
    brought level with it by a ``recovered`` row. Returns the version recorded, or None when the
    history already agrees (or the alias is unset)."""
    registry = ModelRegistry(settings)
    with registry.locked() as txn:
        stack = production_history(txn.conn, registry.name)
        top = stack[-1] if stack else None
        if txn.current is None or txn.current == top:
            return None
        txn.record(
            "recovered",
            version=txn.current,
            previous_version=top,
            decision="recovered",
            reason=f"@{registry.alias} was found on version {txn.current} without the row of its move "
            f"(the history ended at {top or 'nothing'}): recorded as found",
            actor=actor,
        )
        return txn.current  # the lock's transaction commits the row


def _history(settings: Settings) -> list[str]:
    from rakuten_mlops.db import engine_for, upgrade

    upgrade(settings.database_url)
    with engine_for(settings.database_url).connect() as conn:
        return production_history(conn, settings.registered_model)


# --- listing ------------------------------------------------------------------------------


@dataclass
class VersionInfo:
    version: str
    aliases: list[str]
    created_at: str
    run_id: str | None
    status: str
    tags: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tag(self, key: str, default: str = "") -> str:
        return self.tags.get(key, default)


def list_versions(settings: Settings) -> list[VersionInfo]:
    """Every version of the registered model, newest first, with aliases, scores and lineage."""
    registry = ModelRegistry(settings)
    aliases_by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        aliases_by_version.setdefault(version, []).append(alias)
    infos = [
        VersionInfo(
            version=mv.version,
            aliases=sorted(aliases_by_version.get(mv.version, [])),
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                timespec="seconds"
            ),
            run_id=mv.run_id,
            status=mv.status,
            tags=mv.tags,
        )
        for mv in registry.versions()
    ]
    return sorted(infos, key=lambda info: int(info.version), reverse=True)
