"""Training page: registered versions, runs, per-class F1 and confusion matrix; train, promote, roll back."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rakuten_mlops.data.categories import category_name
from rakuten_mlops.settings import Settings
from rakuten_mlops.ui.api import APIError, PlatformAPI
from rakuten_mlops.ui.queries import ActionRefused, model_events

#: The model_events the Training page lists (the retrain decisions are on Monitoring).
TRAINING_EVENTS = ("trained", "promoted", "rejected", "forced", "rollback", "rollout", "rollout_failed")

#: PromQL of the rollout panel: the candidates stable pods shadow, and per-version traffic.
ROLLOUT_QUERIES = {
    "shadowed": "max by (model_version) (rakuten_shadow_candidate_info)",
    "requests": "sum by (model_version) (rate(rakuten_model_requests_total[5m]))",
}
#: The raw samples of both counters of the shadow agreement, in one window read at one moment
#: (``monitoring.counters``): the agreements series have no ``result`` label.
SHADOW_SAMPLES_QUERY = (
    '{__name__=~"rakuten_shadow_agreements_total|rakuten_shadow_samples_total", result=~"|scored"}[5m]'
)

VERSION_COLUMNS = [
    "version", "aliases", "created_at", "f1_weighted", "f1_macro", "accuracy", "train_rows", "test_rows",
    "batch_ids", "dataset_digest", "git_sha", "model_kind", "gate_decision", "gate_reason", "run_id",
]  # fmt: skip


def versions_frame(settings: Settings) -> pd.DataFrame:
    """Every registered version, newest first: scores, lineage, aliases, gate decision."""
    from rakuten_mlops.training.registry import list_versions

    rows = []
    for info in list_versions(settings):
        row = {
            k: info.tag(k) for k in VERSION_COLUMNS if k not in ("version", "aliases", "created_at", "run_id")
        }
        for metric in ("f1_weighted", "f1_macro", "accuracy"):
            row[metric] = float(row[metric]) if row[metric] else None
        rows.append(
            {
                **row,
                "version": info.version,
                "aliases": ", ".join(info.aliases),
                "created_at": info.created_at,
                "run_id": info.run_id,
            }  # fmt: skip
        )
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)


def production_summary(versions: pd.DataFrame, alias: str = "production") -> dict[str, Any] | None:
    """The production row of ``versions_frame`` as a dict, or None."""
    if versions.empty:
        return None
    mask = versions["aliases"].str.split(", ").apply(lambda a: alias in a)
    return versions[mask].iloc[0].to_dict() if mask.any() else None


def training_runs(settings: Settings, limit: int = 50) -> pd.DataFrame:
    """Runs of the training experiment (also those whose version was never promoted)."""
    from rakuten_mlops.registry import connect, registry_errors

    client = connect(settings)
    columns = ["run_name", "status", "start_time", "model_kind", "f1_weighted", "f1_macro", "accuracy", "train_rows",
               "run_id"]  # fmt: skip
    with registry_errors(settings):
        experiment = client.get_experiment_by_name(settings.training_experiment)
        if experiment is None:
            return pd.DataFrame(columns=columns)
        runs = client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
        )
    rows = [
        {
            "run_name": r.info.run_name,
            "status": r.info.status,
            "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
            "model_kind": r.data.tags.get("model_kind", ""),
            "f1_weighted": r.data.metrics.get("f1_weighted"),
            "f1_macro": r.data.metrics.get("f1_macro"),
            "accuracy": r.data.metrics.get("accuracy"),
            "train_rows": r.data.params.get("train_rows"),
            "run_id": r.info.run_id,
        }
        for r in runs
    ]
    return pd.DataFrame(rows, columns=columns)


def per_class_f1(settings: Settings, run_id: str) -> pd.DataFrame:
    """F1 of every class on the test split, from the run's ``f1_class_<code>`` metrics."""
    from rakuten_mlops.registry import connect, registry_errors

    client = connect(settings)
    with registry_errors(settings):
        metrics = client.get_run(run_id).data.metrics
    rows = [
        {
            "prdtypecode": int(k.removeprefix("f1_class_")),
            "category": category_name(int(k.removeprefix("f1_class_"))),
            "f1": v,
        }  # fmt: skip
        for k, v in metrics.items()
        if k.startswith("f1_class_")
    ]
    return pd.DataFrame(rows, columns=["prdtypecode", "category", "f1"]).sort_values(
        "prdtypecode", ignore_index=True
    )


def confusion_matrix_image(settings: Settings, run_id: str) -> bytes | None:
    """The run's ``evaluation/confusion_matrix.png``, or None when it has none."""
    import mlflow.artifacts

    from rakuten_mlops.registry import connect

    connect(settings)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="evaluation/confusion_matrix.png"
        )
    except Exception:
        return None
    return Path(local).read_bytes()


@dataclass
class TrainingJob:
    """A retraining started from the control room: through the API, or as a local process."""

    id: str
    via: str  # api | local
    status: str = "running"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @property
    def decision(self) -> dict[str, Any] | None:
        return self.info.get("decision")


def start_training(settings: Settings, token: str) -> TrainingJob:
    """``POST /admin/retrain`` when the API takes it; otherwise ``train --promote`` as a background process."""
    api = PlatformAPI(settings.api_url, token)
    try:
        info = api.retrain()
        return TrainingJob(info["id"], "api", info.get("status", "running"), info)
    except APIError as exc:
        if exc.status_code == 409:  # a job is already running: say so rather than start another
            raise ActionRefused(str(exc)) from exc
        if exc.status_code not in (None, 401, 404, 501, 502):
            raise
    from rakuten_mlops.training.retrain import LocalRetrainer

    info = LocalRetrainer(settings).start()
    return TrainingJob(info["id"], "local", info["status"], info)


def training_status(settings: Settings, job: TrainingJob, token: str | None) -> TrainingJob:
    if job.via == "api":
        info = PlatformAPI(settings.api_url, token).retrain_status(job.id)
    else:
        from rakuten_mlops.training.retrain import LocalRetrainer

        info = LocalRetrainer(settings).status(job.id)
    return TrainingJob(job.id, job.via, info.get("status", "running"), info)


@dataclass
class ActionResult:
    message: str
    ok: bool = True
    details: list[str] = field(default_factory=list)


def promote_version(
    settings: Settings, version: str, reason: str, *, force: bool, token: str | None
) -> ActionResult:
    """Run the promotion gate (or force it) for ``version``; then ask the API to serve the new version now."""
    from rakuten_mlops.training.registry import promote

    if not reason.strip():
        raise ActionRefused("give a reason: it is recorded with the decision")
    decision = promote(settings, version, force=force, reason=reason.strip(), actor="ui")
    details = list(decision.reasons)
    if not force:
        details.insert(0, f"reason given: {reason.strip()}")
    if decision.promoted:
        details.append(_reload_api(settings, token))
        label = "forced into production" if decision.forced else "promoted to production"
        return ActionResult(f"version {version} {label}", True, details)
    return ActionResult(f"the gate refused version {version}", False, details)


def rollback_production(settings: Settings, to: str | None, reason: str, token: str | None) -> ActionResult:
    """Move production back (through the API, which then serves it at once; else in the registry)."""
    if not reason.strip():
        raise ActionRefused("give a reason: it is recorded with the rollback")
    try:
        out = PlatformAPI(settings.api_url, token).rollback(to, reason.strip())
        return ActionResult(
            f"production rolled back to version {out.get('production_version')}",
            details=[f"the API now serves version {out.get('model_version')}"],
        )
    except APIError as exc:
        if exc.status_code not in (None, 401, 404, 501):
            raise ActionRefused(str(exc)) from exc
        api_note = f"API not used ({exc}); the API picks the alias up on its next poll"
    from rakuten_mlops.training.registry import rollback

    result = rollback(settings, to=to, reason=reason.strip(), actor="ui")
    return ActionResult(
        f"production rolled back from version {result.from_version} to version {result.to_version}",
        details=[api_note],
    )


def _reload_api(settings: Settings, token: str | None) -> str:
    try:
        out = PlatformAPI(settings.api_url, token).reload()
    except APIError as exc:
        return f"the API will pick the new version up on its next alias poll ({exc})"
    return f"the API now serves version {out.get('model_version')}"


def training_events(settings: Settings) -> pd.DataFrame:
    """The registry's history as the Training page lists it: trainings, gate decisions, rollbacks."""
    return model_events(settings, TRAINING_EVENTS)


def shadow_counts(samples: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The shadow agreements and scored samples each version counted in the window, from the
    answer to :data:`SHADOW_SAMPLES_QUERY`, as ``{"agreements": [...], "scored": [...]}`` series."""
    from rakuten_mlops.monitoring.counters import counted

    names = {"rakuten_shadow_agreements_total": "agreements", "rakuten_shadow_samples_total": "scored"}
    totals: dict[str, dict[str, float]] = {"agreements": {}, "scored": {}}
    for series in samples:
        labels = series["labels"]
        by_version = totals[names[labels["__name__"]]]
        version = labels.get("model_version", "")
        by_version[version] = by_version.get(version, 0.0) + counted(series["values"])
    return {
        name: [{"labels": {"model_version": v}, "value": x} for v, x in by_version.items()]
        for name, by_version in totals.items()
    }


def rollout_frame(results: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per model version seen in the last 5 minutes: traffic share, shadowed, agreement.

    ``results`` holds the answers to :data:`ROLLOUT_QUERIES` by name, and the shadow's
    ``agreements`` and ``scored`` (:func:`shadow_counts`). Empty when a single version serves and
    nothing is shadowed: no rollout in progress. An agreement is at most 1: a scrape can fall
    between a shadow batch's two counter increments.
    """

    def by_version(name: str) -> dict[str, float]:
        return {r["labels"].get("model_version", ""): r["value"] for r in results.get(name, [])}

    shadowed = {v for v, x in by_version("shadowed").items() if x >= 1}
    requests, agreements, scored = by_version("requests"), by_version("agreements"), by_version("scored")
    total = sum(requests.values())
    versions = sorted(set(requests) | shadowed, key=lambda v: (len(v), v))
    columns = ["version", "traffic_share", "in_shadow", "shadow_agreement", "shadow_samples_5m"]
    if len(versions) < 2 and not shadowed:
        return pd.DataFrame(columns=columns)
    rows = [
        {
            "version": v,
            "traffic_share": requests.get(v, 0.0) / total if total else 0.0,
            "in_shadow": v in shadowed,
            "shadow_agreement": min(1.0, agreements.get(v, 0.0) / scored[v]) if scored.get(v) else None,
            "shadow_samples_5m": scored.get(v),
        }
        for v in versions
    ]
    return pd.DataFrame(rows, columns=columns)


def rollout_in_progress(settings: Settings) -> pd.DataFrame:
    """:func:`rollout_frame` from the configured Prometheus."""
    from rakuten_mlops.ui.queries.monitoring import prometheus_query, prometheus_samples

    results = {name: prometheus_query(settings, q) for name, q in ROLLOUT_QUERIES.items()}
    return rollout_frame({**results, **shadow_counts(prometheus_samples(settings, SHADOW_SAMPLES_QUERY))})


#: What the Training page shows of a ServedModel's status (our name: the status field).
SERVED_MODEL_STATUS = {
    "phase": "phase",
    "step": "step",
    "stable_version": "stableVersion",
    "candidate_version": "candidateVersion",
    "served_version": "servedVersion",
    "desired_version": "desiredVersion",
    "last_verdict": "lastVerdict",
    "message": "message",
}


def _kubernetes_client():
    """An API client from the in-cluster service account, else the kubeconfig (``KUBECONFIG``,
    else ``~/.kube/config``); None when neither exists."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException:
        pass
    # the library reads KUBECONFIG once, at import: read it now, so the path in use is the current one
    path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if not any(os.path.exists(p) for p in path.split(os.pathsep)):
        return None
    try:
        return config.new_client_from_config(config_file=path)
    except config.ConfigException:
        return None


def served_models(settings: Settings, timeout: float = 5.0) -> list[dict[str, str]] | None:
    """The ServedModels of ``settings.namespace`` and the rollout state their status records
    (what ``kubectl get servedmodels`` prints); None without Kubernetes credentials."""
    from kubernetes import client

    from rakuten_operator import GROUP, PLURAL, VERSION

    api = _kubernetes_client()
    if api is None:
        return None
    with api:
        listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, settings.namespace, PLURAL, _request_timeout=timeout
        )
    rows = []
    for item in listed.get("items", []):
        status = item.get("status") or {}
        rows.append(
            {
                "name": item["metadata"]["name"],
                "registered_model": (item.get("spec") or {}).get("registeredModel", ""),
                **{key: str(status.get(field) or "") for key, field in SERVED_MODEL_STATUS.items()},
            }
        )
    return rows


@dataclass
class Rollout:
    """What the Training page knows of rollouts: the ServedModels' status (None: no Kubernetes
    credentials), traffic and shadow agreement per version (None: no Prometheus configured), and
    what could not be read."""

    served_models: list[dict[str, str]] | None = None
    versions: pd.DataFrame | None = None
    errors: list[tuple[str, Exception]] = field(default_factory=list)

    @property
    def in_progress(self) -> list[dict[str, str]]:
        """The ServedModels whose phase is a rollout under way."""
        from rakuten_operator.rollout import Phase

        under_way = {Phase.ROLLING_OUT, Phase.SHADOW, Phase.CANARY}
        return [m for m in self.served_models or [] if m["phase"] in under_way]

    @property
    def seen(self) -> bool:
        """A rollout shows in the ServedModels or in the per-version metrics."""
        return bool(self.in_progress) or (self.versions is not None and not self.versions.empty)


def current_rollout(settings: Settings) -> Rollout:
    """:func:`served_models` and :func:`rollout_in_progress`, each read on its own: one failing
    source leaves the other's answer on the page."""
    rollout = Rollout()
    try:
        rollout.served_models = served_models(settings)
    except Exception as exc:
        rollout.errors.append((f"Reading the ServedModels of namespace {settings.namespace}", exc))
    if settings.prometheus_url:
        try:
            rollout.versions = rollout_in_progress(settings)
        except Exception as exc:
            rollout.errors.append((f"Reading the rollout from Prometheus at {settings.prometheus_url}", exc))
    return rollout
