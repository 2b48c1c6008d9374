"""`rakuten-mlops serve --workers 2` over real HTTP: an admin reload or rollback reaches every
worker, and `rakuten_model_info` shows only the versions live workers serve.

Every request below opens a fresh connection, so the kernel hands it to either worker. The
workers are told apart by `/model`'s `loaded_at` (each worker loads the model on its own).
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.serving.factories import ADMIN_TOKEN, REALISTIC_PRODUCTS
from tests.support import wait_http

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FRESH = 40  # fresh connections per round


def fresh_get(url: str) -> dict:
    with httpx.Client(timeout=10) as client:  # one new connection
        response = client.get(url)
    assert response.status_code == 200, response.text
    return response.json()


def model_round(api_url: str, n: int = FRESH) -> list[tuple[str | None, str | None]]:
    """``(version, loaded_at)`` of the worker that answered each of ``n`` fresh connections."""
    return [(b["version"], b["loaded_at"]) for b in (fresh_get(f"{api_url}/model") for _ in range(n))]


def wait_all_workers(api_url: str, version: str, *, workers: int = 2, timeout: float = 30) -> list[datetime]:
    """Wait until a whole round of fresh connections reports ``version`` from ``workers`` workers;
    returns when each worker loaded it (``loaded_at``, earliest first)."""
    started = time.monotonic()
    seen: list = []
    while time.monotonic() - started < timeout:
        seen = model_round(api_url)
        loaded_at = {at for _, at in seen}
        if {v for v, _ in seen} == {version} and len(loaded_at) == workers:
            return sorted(datetime.fromisoformat(at) for at in loaded_at)
        time.sleep(0.05)
    raise AssertionError(f"not all {workers} workers serve {version} after {timeout}s: {sorted(set(seen))}")


def follow_lag(loaded_at: list[datetime], answered: datetime) -> float:
    """Seconds from the admin answer to the last worker's swap (the same clock: one host)."""
    return (loaded_at[-1] - answered).total_seconds()


def model_info_series(api_url: str) -> list[str]:
    text = httpx.get(f"{api_url}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith("rakuten_model_info{")]


def served_series(api_url: str, rounds: int = 10) -> set[tuple[str, ...]]:
    """The ``rakuten_model_info`` series of ``rounds`` scrapes (answered by either worker)."""
    found = set()
    for _ in range(rounds):
        found.add(tuple(model_info_series(api_url)))
    return found


def info_line(model, version: str) -> str:
    return f'rakuten_model_info{{alias="production",name="{model.name}",version="{version}"}} 1.0'


def start_two_workers(start_api, registered_model, tmp_path):
    api = start_api(
        registered_model, f"sqlite:///{tmp_path / 'data.db'}", workers=2, RAKUTEN_MODEL_POLL_SECONDS=0
    )
    # rakuten_model_loaded is the minimum over live workers: 1 once both have loaded
    wait_http(f"{api.url}/metrics", 60, ok=lambda r: "rakuten_model_loaded 1.0" in r.text)
    wait_all_workers(api.url, registered_model.versions[0])
    return api


def test_admin_reload_and_rollback_reach_both_workers(registered_model, tmp_path, start_api):
    v1, v2 = registered_model.versions
    api = start_two_workers(start_api, registered_model, tmp_path)
    assert served_series(api.url) == {(info_line(registered_model, v1),)}

    registered_model.move_alias(v2)
    time.sleep(2)
    assert {v for v, _ in model_round(api.url)} == {v1}  # the poll is off: nothing moves by itself

    reload = httpx.post(f"{api.url}/admin/reload", headers=ADMIN, timeout=30)
    answered = datetime.now(UTC)
    assert reload.json() == {"changed": True, "model_version": v2, "previous_version": v1}
    lag = follow_lag(wait_all_workers(api.url, v2, timeout=10), answered)
    print(f"admin reload answered -> other worker serving {v2} {lag:.2f}s later")
    assert lag < 5  # measured 0.2 to 1.3 s: one check interval (1 s) plus the load
    for i in range(FRESH):
        with httpx.Client(base_url=api.url, timeout=10) as client:
            body = client.post("/predict", json=REALISTIC_PRODUCTS[i % len(REALISTIC_PRODUCTS)]).json()
        assert body["model_version"] == v2
    assert served_series(api.url) == {(info_line(registered_model, v2),)}  # v1's series is gone

    # force reloads the same version everywhere: every worker has a new loaded_at
    before = {at for _, at in model_round(api.url)}
    forced = httpx.post(f"{api.url}/admin/reload", headers=ADMIN, json={"force": True}, timeout=30).json()
    assert forced == {"changed": True, "model_version": v2, "previous_version": v2}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = {at for _, at in model_round(api.url)}
        if len(after) == 2 and not after & before:
            break
        time.sleep(0.1)
    assert len(after) == 2 and not after & before, (before, after)
    assert served_series(api.url) == {(info_line(registered_model, v2),)}

    pytest.importorskip("rakuten_mlops.training.registry", reason="rollback needs the training package")
    rollback = httpx.post(
        f"{api.url}/admin/rollback", headers=ADMIN, json={"to": v1, "reason": "workers test"}, timeout=30
    )
    answered = datetime.now(UTC)
    assert rollback.status_code == 200, rollback.text
    assert rollback.json()["model_version"] == v1
    lag = follow_lag(wait_all_workers(api.url, v1, timeout=10), answered)
    print(f"admin rollback answered -> other worker serving {v1} {lag:.2f}s later")
    assert lag < 5  # measured 0.2 to 1.3 s: one check interval (1 s) plus the load
    assert served_series(api.url) == {(info_line(registered_model, v1),)}
    # each worker loaded at startup, on the reload, on the forced reload and on the rollback
    metrics = httpx.get(f"{api.url}/metrics", timeout=10).text
    assert 'rakuten_model_reloads_total{result="success"} 8.0' in metrics


@pytest.mark.parametrize("multiprocess", [False, True], ids=["single-process", "multiprocess-dir"])
def test_one_worker_shows_only_the_served_version(registered_model, tmp_path, start_api, multiprocess):
    v1, v2 = registered_model.versions
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")} if multiprocess else {}
    api = start_api(
        registered_model, f"sqlite:///{tmp_path / 'data.db'}", RAKUTEN_MODEL_POLL_SECONDS=0, **env
    )
    assert model_info_series(api.url) == [info_line(registered_model, v1)]
    registered_model.move_alias(v2)
    assert httpx.post(f"{api.url}/admin/reload", headers=ADMIN, timeout=30).json()["model_version"] == v2
    assert model_info_series(api.url) == [info_line(registered_model, v2)]
    time.sleep(2.5)  # the worker's own announcement must not make it reload a second time
    metrics = httpx.get(f"{api.url}/metrics", timeout=10).text
    assert 'rakuten_model_reloads_total{result="success"} 2.0' in metrics
    assert model_info_series(api.url) == [info_line(registered_model, v2)]


def worker_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", log)]


def test_a_killed_worker_leaves_no_model_info_behind(registered_model, tmp_path, start_api):
    """uvicorn replaces a worker killed with SIGKILL; what the dead one wrote must not be shown."""
    v1, v2 = registered_model.versions
    api = start_two_workers(start_api, registered_model, tmp_path)
    pids = worker_pids(api.log_path.read_text())
    assert len(pids) == 2, api.log()
    os.kill(pids[0], signal.SIGKILL)  # no lifespan shutdown, no mark_process_dead
    deadline = time.monotonic() + 120
    while len(worker_pids(api.log_path.read_text())) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(worker_pids(api.log_path.read_text())) == 3, api.log()  # uvicorn started a new worker
    wait_http(f"{api.url}/metrics", 120, ok=lambda r: "rakuten_model_loaded 1.0" in r.text)
    wait_all_workers(api.url, v1, timeout=120)

    registered_model.move_alias(v2)
    assert httpx.post(f"{api.url}/admin/reload", headers=ADMIN, timeout=120).json()["model_version"] == v2
    wait_all_workers(api.url, v2, timeout=120)  # the other worker follows the announced reload
    # the killed worker's file said v1 = 1: only the version live workers serve remains
    assert served_series(api.url) == {(info_line(registered_model, v2),)}
    assert httpx.get(f"{api.url}/metrics", timeout=10).text.count("rakuten_model_loaded 1.0") == 1
