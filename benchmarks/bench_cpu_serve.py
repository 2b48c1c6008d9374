"""CPU time per 1,000 products in batches: this API against `mlflow models serve`, and optionally
against another checkout of this API.

On a shared machine throughput follows the load, but the CPU a server spends per item hardly
does, and it is what decides the batch ratio once both sides saturate the cores (2 workers on
2 cores). Same model and setup as ``bench_serve`` (its helpers): one worker per side, ``wrk``
sends 1,000-product batches on 2 connections for BENCH_CPU_SECONDS (default 5); the CPU is
read from /proc before and after (user + system of every process of the server's session, and
of the Postgres backends connected to the side's own prediction-log database), 1.5 s after wrk
stops so the log writer has sent the last rows. The sides alternate for BENCH_CPU_ROUNDS rounds
(default 5); the table gives the medians in CPU milliseconds per 1,000 products.

BENCH_CPU_BASE=<a src directory> adds a side "base": this API served from that source tree
(``PYTHONPATH``), e.g. ``git archive main src | tar -x -C /tmp/base`` then
``BENCH_CPU_BASE=/tmp/base/src``, to compare a change with the code before it in the same rounds.

Run: ``python -m benchmarks.run cpu_serve`` or ``python -m benchmarks.bench_cpu_serve`` (needs wrk
and Postgres; about 2 minutes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bench_serve import BATCH, N_BODIES, _free_port, _lua_script, _register_model, _server, _wrk
from benchmarks.common import PG_ADMIN, print_table, process_cpu, session_cpu, throwaway_postgres

SECONDS = int(os.environ.get("BENCH_CPU_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_CPU_ROUNDS", "5"))
BASE = os.environ.get("BENCH_CPU_BASE")
FLUSH_WAIT = 1.5  # the log writer sends queued rows at least every second


def _backends(database: str | None) -> list[int]:
    """Pids of the Postgres backends connected to ``database``."""
    if database is None:
        return []
    admin = sa.create_engine(PG_ADMIN)
    try:
        with admin.connect() as conn:
            return list(
                conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database})
                .scalars()
                .all()
            )
    finally:
        admin.dispose()


def _cpu(session: int, database: str | None) -> tuple[float, dict[int, float]]:
    backends = {}
    for pid in _backends(database):
        with contextlib.suppress(OSError):
            backends[pid] = process_cpu(pid)
    return session_cpu(session), backends


def _round(url: str, script: Path, session: int, database: str | None) -> dict:
    server_before, backends_before = _cpu(session, database)
    result = _wrk(url, script, 2, SECONDS)
    time.sleep(FLUSH_WAIT)
    server_after, backends_after = _cpu(session, database)
    items = result["requests"] * BATCH
    backend = sum(cpu - backends_before.get(pid, 0.0) for pid, cpu in backends_after.items())
    per_1000 = 1e6 / items if items else float("nan")
    return {
        "items": items,
        "server_ms": (server_after - server_before) * per_1000,
        "postgres_ms": backend * per_1000,
        "items_per_s": items / SECONDS,
    }


def run(work: Path, databases: dict[str, str | None]) -> dict[str, list[dict]]:
    uri, products = _register_model(work)
    batch_items = products[N_BODIES : N_BODIES + BATCH]
    scripts = {
        "ours": _lua_script(work / "ours.lua", [json.dumps({"items": batch_items})], "/predict/batch"),
        "peer": _lua_script(
            work / "peer.lua", [json.dumps({"dataframe_records": batch_items})], "/invocations"
        ),
    }
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "RAKUTEN_MODEL_POLL_SECONDS": "30",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "UVICORN_TIMEOUT_WORKER_HEALTHCHECK": "60",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    sides = ["ours", "peer"] + (["base"] if BASE else [])
    ports = {side: _free_port() for side in sides}
    results: dict[str, list[dict]] = {side: [] for side in sides}
    with contextlib.ExitStack() as servers:
        started = {}
        for side in sides:
            port = str(ports[side])
            if side == "peer":
                cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/rakuten_classifier@production",
                       "--env-manager", "local", "-h", "127.0.0.1", "-p", port, "-w", "1"]  # fmt: skip
                side_env, ready = env, "/ping"
            else:
                cmd = [sys.executable, "-m", "rakuten_mlops.cli", "serve", "--host", "127.0.0.1", "--port", port,
                       "--workers", "1"]  # fmt: skip
                side_env = {
                    **env,
                    "RAKUTEN_HOME": str(work / f"home-{side}"),
                    "RAKUTEN_DATABASE_URL": databases[side] or f"sqlite:///{work / f'{side}.db'}",
                }
                if side == "base":
                    side_env["PYTHONPATH"] = BASE
                ready = "/ready"
            url = f"http://127.0.0.1:{port}"
            started[side] = (
                url,
                servers.enter_context(_server(cmd, side_env, url + ready, work / f"{side}.log")),
            )
        paths = {side: "/invocations" if side == "peer" else "/predict/batch" for side in sides}
        for side, (url, proc) in started.items():  # warm-up
            _round(url + paths[side], scripts["peer" if side == "peer" else "ours"], proc.pid, None)
        for _ in range(ROUNDS):
            for side, (url, proc) in started.items():
                database = databases.get(side)
                name = database.rsplit("/", 1)[1] if database else None
                results[side].append(
                    _round(url + paths[side], scripts["peer" if side == "peer" else "ours"], proc.pid, name)
                )
    return results


def main() -> None:
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (or run .ci/setup.d/40-serving.sh)")
        return
    start_load = os.getloadavg()[0]
    print(
        f"load average {start_load:.1f}; {ROUNDS} rounds of {SECONDS}s per side, 1 worker, batches of {BATCH:,}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp, contextlib.ExitStack() as stack:
        databases = {"ours": stack.enter_context(throwaway_postgres())}
        if BASE:
            databases["base"] = stack.enter_context(throwaway_postgres())
        results = run(Path(tmp), databases)
    rows = []
    for side, rounds in results.items():
        server = [r["server_ms"] for r in rounds]
        total = [r["server_ms"] + r["postgres_ms"] for r in rounds]
        rows.append([side, statistics.median(server), statistics.median(r["postgres_ms"] for r in rounds),
                     statistics.median(total), f"{min(total):.1f}-{max(total):.1f}",
                     statistics.median(r["items_per_s"] for r in rounds)])  # fmt: skip
    print_table(
        ["side", "server CPU ms / 1,000", "Postgres CPU ms / 1,000", "total", "rounds (total)", "items/s"],
        rows,
    )
    for side, rounds in results.items():
        print(
            f"{side} per round (server + Postgres):",
            ", ".join(f"{r['server_ms'] + r['postgres_ms']:.1f}" for r in rounds),
        )
    peer = results["peer"]
    for side in results:
        if side != "peer":
            ratios = [
                p["server_ms"] / (o["server_ms"] + o["postgres_ms"])
                for o, p in zip(results[side], peer, strict=True)
            ]
            print(f"peer CPU / {side} CPU per item (paired rounds, median): {statistics.median(ratios):.2f}x")
    if BASE:
        ratios = [
            (b["server_ms"] + b["postgres_ms"]) / (o["server_ms"] + o["postgres_ms"])
            for o, b in zip(results["ours"], results["base"], strict=True)
        ]
        print(f"base CPU / ours CPU per item (paired rounds, median): {statistics.median(ratios):.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
