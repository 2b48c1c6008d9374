"""Health of every backend the control room depends on, each as a state with the reason.

``not configured`` is a state of its own (Argo and Prometheus are optional), never a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from rakuten_mlops.settings import Settings, redact_url
from rakuten_mlops.ui.api import APIError, PlatformAPI

OK, DEGRADED, DOWN, NOT_CONFIGURED = "ok", "degraded", "down", "not configured"
PROBE_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


@dataclass(frozen=True)
class HealthCheck:
    component: str
    state: str  # ok | degraded | down | not configured
    reason: str
    target: str = ""
    seconds: float = 0.0

    @property
    def badge(self) -> str:
        """Streamlit markdown: a green, orange, red or grey badge naming the state."""
        color, icon = {
            OK: ("green", "check_circle"),
            DEGRADED: ("orange", "warning"),
            DOWN: ("red", "error"),
        }.get(self.state, ("gray", "do_not_disturb_on"))
        return f":{color}-badge[:material/{icon}: {self.state}]"


def _timed(component: str, target: str, probe: Callable[[], tuple[str, str]]) -> HealthCheck:
    start = time.perf_counter()
    try:
        state, reason = probe()
    except Exception as exc:  # every failure is a red state with its cause, never a crash of the page
        state, reason = (
            DOWN,
            f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
        )
    return HealthCheck(component, state, reason, target, time.perf_counter() - start)


def check_database(settings: Settings) -> HealthCheck:
    """The data database answers and its schema is migrated."""

    def probe() -> tuple[str, str]:
        from sqlalchemy import func, select

        from rakuten_mlops.db import engine_for, upgrade
        from rakuten_mlops.db.models import Product

        upgrade(settings.database_url)
        with engine_for(settings.database_url).connect() as conn:
            n = conn.execute(select(func.count()).select_from(Product)).scalar_one()
        return OK, f"reachable, {n:,} products"

    return _timed("database", redact_url(settings.database_url), probe)


def check_mlflow(settings: Settings) -> HealthCheck:
    """The tracking server answers ``/health`` (or the embedded store opens); the registry is readable."""

    def probe() -> tuple[str, str]:
        uri = settings.mlflow_tracking_uri
        if uri.startswith(("http://", "https://")):
            response = httpx.get(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT)
            if response.status_code != 200:
                return DOWN, f"/health answered {response.status_code}"
        from rakuten_mlops.registry import production_version

        version = production_version(settings)
        where = "server" if uri.startswith("http") else "embedded store"
        return OK, f"{where} reachable; production version: {version or 'none yet'}"

    return _timed("MLflow", redact_url(settings.mlflow_tracking_uri), probe)


def check_api(settings: Settings) -> HealthCheck:
    """The API is alive; degraded while it has no model loaded."""

    def probe() -> tuple[str, str]:
        api = PlatformAPI(settings.api_url, timeout=PROBE_TIMEOUT)
        try:
            api.health()
        except APIError as exc:
            return DOWN, str(exc)
        ready = api.ready()
        if ready.get("ready") and ready.get("model_version") is None:  # a fresh install: nothing to serve
            return DEGRADED, f"up, no model to serve: {ready.get('reason')}"
        if ready.get("ready"):
            return OK, f"ready, serving version {ready.get('model_version')}"
        return DEGRADED, f"up but not ready: {ready.get('reason') or 'no model loaded'}"

    return _timed("API", settings.api_url, probe)


def check_argo(settings: Settings) -> HealthCheck:
    if not settings.argo_server:
        return HealthCheck(
            "Argo", NOT_CONFIGURED, "ARGO_SERVER is not set (retraining runs as a local process)"
        )
    from rakuten_mlops.argo import ArgoError, ArgoServer

    server = ArgoServer.from_settings(settings, timeout=5.0)

    def probe() -> tuple[str, str]:
        try:
            return OK, f"Argo server {server.version()}"
        except ArgoError as exc:
            if isinstance(exc.__cause__, httpx.HTTPError):
                raise exc.__cause__ from None  # named like the other checks' transport failures
            return DOWN, str(exc)

    return _timed("Argo", server.url, probe)


def check_prometheus(settings: Settings) -> HealthCheck:
    if not settings.prometheus_url:
        return HealthCheck("Prometheus", NOT_CONFIGURED, "RAKUTEN_PROMETHEUS_URL is not set")
    base = settings.prometheus_url.rstrip("/")

    def probe() -> tuple[str, str]:
        response = httpx.get(f"{base}/-/ready", timeout=PROBE_TIMEOUT)
        if response.status_code != 200:
            return DOWN, f"/-/ready answered {response.status_code}: {response.text[:100]}"
        return OK, "ready"

    return _timed("Prometheus", base, probe)


def all_checks(settings: Settings) -> list[HealthCheck]:
    """Every check, in the order the Overview shows them (run side by side: a dead host costs
    its timeout once, not once per check)."""
    from concurrent.futures import ThreadPoolExecutor

    checks = (check_database, check_mlflow, check_api, check_argo, check_prometheus)
    with ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="health") as pool:
        return list(pool.map(lambda check: check(settings), checks))
