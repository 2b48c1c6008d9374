"""Prediction API vs `mlflow models serve` (the peer users would otherwise pick), same model version.

Both servers load `models:/rakuten_classifier@production` from the same registry; Debian's `wrk`
drives them with keep-alive connections from the same machine: single predictions at 1 and 32
connections (requests/s, p50, p99) and 1,000-product batches (items/s). Run with the same number
of worker processes on both sides (1, then 2 = the machine's cores).

Targets (2 cores): >= 3x the peer's requests/s, p99 <= 20 ms at 32 connections, >= 8,000 items/s
and >= 1.25x the peer's items/s in batches.
Our API also returns top-k classes with confidences and writes every prediction to the
prediction log; the peer returns the predicted class only.

A third side, our API with RAKUTEN_SERVE_FAST_PATH=false (the prediction paths through FastAPI's
routing and validation), shows what the plain-ASGI fast path buys, in the same run.

Each scenario alternates the sides for BENCH_SERVE_ROUNDS rounds (default 3) of
BENCH_SERVE_SECONDS (default 5) and reports medians, so load from elsewhere on the machine hits
both sides alike; a ratio is the median of the rounds' ratios (ours and the peer run back to back
in a round). With 2 workers, every measured batch round has wrk's 2 connections on the 2 workers,
on both sides: wrk is restarted until they are (``_wrk``; the report says how often), since a
server whose connections share one worker serves at half its speed. BENCH_SERVE_WORKERS (default "1,2"), BENCH_SERVE_ROWS (training rows, 20000),
BENCH_SERVE_SCENARIOS (default "single_c1,single_c32,batch_c2"), BENCH_SERVE_ROUTED (default true).

BENCH_SERVE_BASE=<a src directory> adds a side "base": this API served from that source tree
(``PYTHONPATH``, its own prediction-log database), e.g. ``git archive main src | tar -x -C
/tmp/base`` then ``BENCH_SERVE_BASE=/tmp/base/src``, to compare a change with the code before
it in the same rounds (the report adds base's ratio to the peer and ours / base).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from benchmarks.common import print_table, throwaway_postgres

SECONDS = int(os.environ.get("BENCH_SERVE_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_SERVE_ROUNDS", "3"))
WORKERS = [int(w) for w in os.environ.get("BENCH_SERVE_WORKERS", "1,2").split(",")]
TRAIN_ROWS = int(os.environ.get("BENCH_SERVE_ROWS", "20000"))
ROUTED = os.environ.get("BENCH_SERVE_ROUTED", "true") != "false"  # the third side, FastAPI's routes
BASE = os.environ.get("BENCH_SERVE_BASE")  # a fourth side: this API from another source tree
BATCH = 1000
N_BODIES = 200
TARGET_RATIO, TARGET_P99_MS, TARGET_ITEMS, TARGET_BATCH_RATIO = 3.0, 20.0, 8000.0, 1.25
PLACEMENT_ATTEMPTS = 40  # wrk restarts until its connections are spread over the workers (_wrk)
PLACEMENT_CHECK_SECONDS = 0.3  # wrk has connected by then: where did its connections land
PLACEMENT_SETTLE_SECONDS = 0.5  # after a stopped attempt, the servers finish the requests in flight


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _register_model(home: Path) -> tuple[str, list[dict]]:
    """Train the default pipeline on generated rows, register it as production; return URI and products."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    from rakuten_mlops.data.generator import generate_frame
    from rakuten_mlops.model import build_pipeline
    from rakuten_mlops.model.pipeline import trusted_types

    uri = f"sqlite:///{home / 'mlflow.db'}"
    frame = generate_frame(TRAIN_ROWS + N_BODIES + BATCH, seed=7)
    frame["description"] = frame["description"].fillna("")
    train, held_out = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:]
    started = time.perf_counter()
    pipeline = build_pipeline("sgd").fit(train[["designation", "description"]], train["prdtypecode"])
    print(
        f"trained the default pipeline on {TRAIN_ROWS:,} generated rows in {time.perf_counter() - started:.1f}s"
    )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # other benchmarks in this process may have pointed it elsewhere
    mlflow.set_experiment("bench-serve")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name="rakuten_classifier",
            skops_trusted_types=trusted_types(),
            pip_requirements=["scikit-learn", "pandas", "ftfy"],
        )
    MlflowClient(uri).set_registered_model_alias(
        "rakuten_classifier", "production", info.registered_model_version
    )
    products = [
        {"designation": str(r.designation), "description": str(r.description)}
        for r in held_out.itertuples(index=False)
    ]
    return uri, products


def _lua_script(path: Path, bodies: list[str], url_path: str) -> Path:
    quoted = ",\n".join(f"[==[{b}]==]" for b in bodies)
    path.write_text(
        f"""
local bodies = {{
{quoted}
}}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = (i % #bodies) + 1
  return wrk.format("POST", "{url_path}", nil, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d errors=%d status=%d timeouts=%d p50=%f p99=%f\\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
""",
        encoding="utf-8",
    )
    return path


def _wrk(url: str, script: Path, connections: int, seconds: int, spread: int = 1) -> dict:
    """One wrk run; with ``spread`` > 1, a run whose connections are held by ``spread`` distinct
    server processes, from its start to its end.

    With several workers, each accepts from the shared listening socket, and both of wrk's
    connections often land on one worker (the one that wakes first takes every pending
    connection), which then serves alone: the same server measures at half its speed or at full
    speed by luck, for the peer as for us. So a run that should spread its connections is
    checked a moment after wrk connects (``ss`` says which processes hold them): when fewer
    processes hold them, wrk is stopped, the servers are given a moment to finish the requests
    in flight, and wrk starts again, up to PLACEMENT_ATTEMPTS times. The check is repeated just
    before the run ends (a connection that broke and came back may have landed elsewhere); a run
    that fails it is thrown away too. Nothing changes on the server side: it is the placement a
    user's clients get some of the time, made the same on both sides.
    """
    port = urlsplit(url).port
    for attempt in range(1, PLACEMENT_ATTEMPTS + 1):
        result = _wrk_once(url, script, connections, seconds, spread)
        if result is not None:
            return {**result, "placement_attempts": attempt}
        time.sleep(PLACEMENT_SETTLE_SECONDS)
    raise RuntimeError(
        f"wrk's {connections} connections to port {port} did not land on {spread} distinct server"
        f" processes in {PLACEMENT_ATTEMPTS} attempts: is a worker down?"
    )


def _wrk_once(url: str, script: Path, connections: int, seconds: int, spread: int) -> dict | None:
    """One wrk run, or None when ``spread`` > 1 and fewer processes held its connections."""
    threads = min(2, connections)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    port = urlsplit(url).port
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers_used = None
    if connections <= 4:  # a few keep-alive connections: which worker processes hold them
        time.sleep(PLACEMENT_CHECK_SECONDS if spread > 1 else min(1.0, seconds / 3))
        workers_used = _workers_holding(port)
        if spread > 1 and (workers_used or 0) < spread:
            proc.kill()
            proc.communicate()
            return None
        if spread > 1:
            time.sleep(max(seconds - PLACEMENT_CHECK_SECONDS - 0.5, 0))
            if (_workers_holding(port) or 0) < spread:
                proc.communicate()
                return None
    out, err = proc.communicate()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, out, err)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    stats = dict(re.findall(r"(\w+)=([\d.]+)", out.split("BENCH", 1)[1]))
    return {
        "rps": rps,
        "p50_ms": float(stats["p50"]) / 1000,
        "p99_ms": float(stats["p99"]) / 1000,
        "errors": int(stats["errors"]) + int(stats["status"]) + int(stats["timeouts"]),
        "requests": int(stats["requests"]),
        "workers_used": workers_used,
    }


def _workers_holding(port: int | None) -> int | None:
    """How many server processes hold the established connections to ``port`` (``ss -tnp``)."""
    try:
        listing = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return len(set(re.findall(r"pid=(\d+)", listing))) or None


@contextlib.contextmanager
def _server(cmd: list[str], env: dict, ready_url: str, log: Path) -> Iterator[subprocess.Popen]:
    """The server started in a session of its own (its processes share the session id
    ``proc.pid``), once ``ready_url`` answers 200; stopped with its whole process group."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ready_url} not ready; see {log}")
            time.sleep(0.3)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


ALL_SCENARIOS = (("single_c1", "single", 1), ("single_c32", "single", 32), ("batch_c2", "batch", 2))
SCENARIOS = tuple(
    s
    for s in ALL_SCENARIOS
    if s[0] in os.environ.get("BENCH_SERVE_SCENARIOS", "single_c1,single_c32,batch_c2")
)


def _median_run(runs: list[dict]) -> dict:
    """Per metric, the median over the rounds (the machine may be shared: rounds alternate sides)."""
    out = {key: statistics.median(r[key] for r in runs) for key in ("rps", "p50_ms", "p99_ms")}
    out["errors"] = sum(r["errors"] for r in runs)
    out["rounds"] = runs
    return out


def _measure(sides: dict[str, tuple[str, str]], scripts: dict[str, Path], workers: int) -> dict[str, dict]:
    """Alternate the sides (name -> (base URL, "ours"/"peer")) for every scenario, ROUNDS times; medians.

    Batches run on fewer connections than single predictions: with several workers, every
    batch run has its connections on as many distinct workers as it can (``_wrk``'s ``spread``).
    """
    for url, kind in sides.values():  # warm-up
        _wrk(url + ("/predict" if kind == "ours" else "/invocations"), scripts[f"{kind}_single"], 4, 2)
    runs: dict[str, dict[str, list]] = {name: {k: [] for k, _, _ in SCENARIOS} for name in sides}
    for _ in range(ROUNDS):
        for key, scenario, connections in SCENARIOS:
            for name, (url, kind) in sides.items():
                path = (
                    "/invocations"
                    if kind == "peer"
                    else ("/predict" if scenario == "single" else "/predict/batch")
                )
                spread = min(connections, workers) if scenario == "batch" else 1
                runs[name][key].append(
                    _wrk(url + path, scripts[f"{kind}_{scenario}"], connections, SECONDS, spread)
                )
    out = {name: {k: _median_run(v) for k, v in side.items()} for name, side in runs.items()}
    for side in out.values():
        if "batch_c2" in side:
            side["batch_c2"]["items_per_s"] = side["batch_c2"]["rps"] * BATCH
    return out


def _ratio(ours: dict, peer: dict) -> float:
    """The median over the rounds of ours / peer, each pair measured back to back."""
    return statistics.median(o["rps"] / p["rps"] for o, p in zip(ours["rounds"], peer["rounds"], strict=True))


def _placement(ours: dict, peer: dict) -> str:
    """Where the connections were in every measured round, per side, and how many wrk runs were
    stopped and started again before they were spread (``_wrk``)."""
    pairs = list(zip(ours["rounds"], peer["rounds"], strict=True))
    used = [(o.get("workers_used"), p.get("workers_used")) for o, p in pairs]
    if any(o is None or p is None for o, p in used):
        return ""
    restarts = [(o["placement_attempts"] - 1, p["placement_attempts"] - 1) for o, p in pairs]
    return (
        f"workers holding the connections in every measured round: ours {[a for a, _ in used]},"
        f" peer {[b for _, b in used]} (runs restarted until spread: ours {[a for a, _ in restarts]},"
        f" peer {[b for _, b in restarts]})"
    )


def run(work: Path, database_url: str, base_database_url: str | None = None) -> dict:
    uri, products = _register_model(work)
    singles, batch_items = products[:N_BODIES], products[N_BODIES : N_BODIES + BATCH]
    lua = work / "lua"
    lua.mkdir()
    scripts = {
        "ours_single": _lua_script(lua / "ours_single.lua", [json.dumps(p) for p in singles], "/predict"),
        "ours_batch": _lua_script(
            lua / "ours_batch.lua", [json.dumps({"items": batch_items})], "/predict/batch"
        ),
        "peer_single": _lua_script(
            lua / "peer_single.lua", [json.dumps({"dataframe_records": [p]}) for p in singles], "/invocations"
        ),
        "peer_batch": _lua_script(
            lua / "peer_batch.lua", [json.dumps({"dataframe_records": batch_items})], "/invocations"
        ),
    }
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "RAKUTEN_HOME": str(work / "home"),
        "RAKUTEN_DATABASE_URL": database_url,
        "RAKUTEN_MODEL_POLL_SECONDS": "30",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",  # our registry is trusted (as the API's loader does)
        "UVICORN_TIMEOUT_WORKER_HEALTHCHECK": "60",  # the peer's uvicorn CLI: as `serve` sets it for ours
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # the peer runs `uvicorn`
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    results: dict = {"load_average_start": os.getloadavg()[0], "seconds_per_run": SECONDS, "rounds": ROUNDS,
                     "runs": {}}  # fmt: skip
    for workers in WORKERS:
        ports = {side: _free_port() for side in ("ours", "routed", "base", "peer")}
        urls = {side: f"http://127.0.0.1:{port}" for side, port in ports.items()}

        ours_cmd = {
            side: [sys.executable, "-m", "rakuten_mlops.cli", "serve", "--host", "127.0.0.1",
                   "--port", str(ports[side]), "--workers", str(workers)]
            for side in ("ours", "routed", "base")
        }  # fmt: skip

        peer_cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/rakuten_classifier@production",
                    "--env-manager", "local", "-h", "127.0.0.1", "-p", str(ports["peer"]), "-w", str(workers)]  # fmt: skip
        with contextlib.ExitStack() as servers:
            servers.enter_context(
                _server(ours_cmd["ours"], env, f"{urls['ours']}/ready", work / f"ours-{workers}.log")
            )
            if ROUTED:
                servers.enter_context(
                    _server(
                        ours_cmd["routed"],
                        {**env, "RAKUTEN_SERVE_FAST_PATH": "false"},
                        f"{urls['routed']}/ready",
                        work / f"routed-{workers}.log",
                    )
                )
            if BASE:
                base_env = {
                    **env,
                    "PYTHONPATH": BASE,
                    "RAKUTEN_HOME": str(work / "home-base"),
                    "RAKUTEN_DATABASE_URL": base_database_url or f"sqlite:///{work / 'base.db'}",
                }
                servers.enter_context(
                    _server(ours_cmd["base"], base_env, f"{urls['base']}/ready", work / f"base-{workers}.log")
                )
            servers.enter_context(
                _server(peer_cmd, env, f"{urls['peer']}/ping", work / f"peer-{workers}.log")
            )
            sides = {"ours": (urls["ours"], "ours"), "peer": (urls["peer"], "peer")}
            if ROUTED:
                sides["routed"] = (urls["routed"], "ours")
            if BASE:
                sides["base"] = (urls["base"], "ours")
            measured = _measure(sides, scripts, workers)
        results["runs"][str(workers)] = {**measured, "load_average": os.getloadavg()[0]}
    return results


def report(results: dict) -> list[str]:
    rows, verdicts = [], []
    for workers, run_ in results["runs"].items():
        ours, peer, routed = run_["ours"], run_["peer"], run_.get("routed")
        for key, label in (("single_c1", "single, 1 conn"), ("single_c32", "single, 32 conns"),
                           ("batch_c2", "batch 1000, 2 conns (items/s)")):  # fmt: skip
            if key not in ours:
                continue
            o, p = ours[key], peer[key]
            rate = "items_per_s" if key == "batch_c2" else "rps"
            fast = f"{_ratio(o, routed[key]):.1f}x" if routed else "-"
            rows.append([workers, label, o[rate], p[rate], f"{_ratio(o, p):.2f}x", fast,
                         o["p50_ms"], p["p50_ms"], o["p99_ms"], p["p99_ms"], o["errors"], p["errors"]])  # fmt: skip
        verdict = [f"workers={workers}:"]
        if "single_c32" in ours:
            ratio, p99 = _ratio(ours["single_c32"], peer["single_c32"]), ours["single_c32"]["p99_ms"]
            verdict.append(
                f"ratio at 32 conns {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x: {'met' if ratio >= TARGET_RATIO else 'NOT met'});"
                f" p99 at 32 conns {p99:.1f} ms (target <= {TARGET_P99_MS:.0f}: {'met' if p99 <= TARGET_P99_MS else 'NOT met'});"
            )  # fmt: skip
        if "batch_c2" in ours:
            items, ratio = ours["batch_c2"]["items_per_s"], _ratio(ours["batch_c2"], peer["batch_c2"])
            verdict.append(
                f"batch {items:,.0f} items/s (target >= {TARGET_ITEMS:,.0f}: {'met' if items >= TARGET_ITEMS else 'NOT met'}),"
                f" {ratio:.2f}x the peer (target >= {TARGET_BATCH_RATIO}x: {'met' if ratio >= TARGET_BATCH_RATIO else 'NOT met'});"
            )  # fmt: skip
        verdicts.append(" ".join([*verdict, f"load average {run_['load_average']:.1f}"]))
        if (
            "batch_c2" in ours
            and int(workers) > 1
            and (placement := _placement(ours["batch_c2"], peer["batch_c2"]))
        ):
            verdicts.append(f"workers={workers}, batch: {placement}")
        if base := run_.get("base"):
            verdicts += [
                f"workers={workers}, {key}: base {base[key]['rps']:,.1f} req/s, base / peer"
                f" {_ratio(base[key], peer[key]):.2f}x, ours / base {_ratio(ours[key], base[key]):.2f}x,"
                f" base p99 {base[key]['p99_ms']:.1f} ms"
                for key in ours
            ]
    print_table(
        ["workers", "scenario", "ours req/s", "peer req/s", "ratio", "fast path vs FastAPI routes", "ours p50 ms",
         "peer p50 ms", "ours p99 ms", "peer p99 ms", "ours errors", "peer errors"],
        rows,
    )  # fmt: skip
    for line in verdicts:
        print(line)
    return verdicts


def main() -> None:
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (or run .ci/setup.d/40-serving.sh)")
        return
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {SECONDS}s per run; workers {WORKERS}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp,
        throwaway_postgres() as pg_url,
        throwaway_postgres() if BASE else contextlib.nullcontext() as base_url,
    ):
        work = Path(tmp)
        results = run(work, pg_url or f"sqlite:///{work / 'data.db'}", base_url)
    results["prediction_log"] = "postgres" if pg_url else "sqlite"
    report(results)
    out = Path(os.environ.get("RAKUTEN_HOME", ".rakuten")) / "reports" / "bench_serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
