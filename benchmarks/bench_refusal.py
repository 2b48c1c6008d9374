"""What one refusal of admission control costs a worker: in the HTTP protocol (what
``rakuten-mlops serve`` runs) against in the ASGI app (uvicorn's own httptools protocol: the
ASGI layer refuses).

Each side is one worker (``create_app_from_env`` under uvicorn, no model needed: nothing is
served) pinned to the last CPU, with ``RAKUTEN_MAX_INFLIGHT=1`` and that one slot held by a
request whose body lacks its last byte; ``wrk`` (closed loop, 64 keep-alive connections, on
the other CPUs) then gets a 503 for every ``POST /predict``. The cost is the worker's CPU time
(user + system, from ``/proc``) over the run, divided by the answers: it holds however busy the
machine is, where the rate of answers does not. Sides alternate, BENCH_REFUSAL_ROUNDS rounds
(default 3) of BENCH_REFUSAL_SECONDS (default 5) each; medians are reported.

Run: ``python -m benchmarks.bench_refusal`` (about a minute; needs Debian's wrk).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_serve import _free_port, _server

ROUNDS = int(os.environ.get("BENCH_REFUSAL_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_REFUSAL_SECONDS", "5"))
CONNECTIONS = 64
BODY = b'{"designation": "Lot de 3 crayons de couleur", "description": "papeterie"}'
SIDES = {
    "HTTP protocol (serve)": "rakuten_mlops.serving.protocol:AdmissionHttpProtocol",
    "ASGI layer (uvicorn's httptools)": "httptools",
}
SERVER = """
import sys, uvicorn
uvicorn.run("rakuten_mlops.serving.app:create_app_from_env", factory=True, host="127.0.0.1",
            port=int(sys.argv[1]), http=sys.argv[2], log_level="warning")
"""
LUA = f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{BODY.decode()}]==]
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _shed(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "rakuten_http_requests_shed_total"
    )


def _pin(pid: int, cpus: set[int]) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cpus)


def _server_pid(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))


def _round(work: Path, protocol: str, server_cpu: int, client_cpus: set[int]) -> dict:
    port = _free_port()
    env = {
        **os.environ,
        "RAKUTEN_HOME": str(work / "home"),
        "RAKUTEN_DATABASE_URL": f"sqlite:///{work / 'data.db'}",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}",  # nothing there: no model
        "RAKUTEN_REGISTERED_MODEL": "none",
        "RAKUTEN_MODEL_POLL_SECONDS": "0",
        "RAKUTEN_MAX_INFLIGHT": "1",
    }
    cmd = [sys.executable, "-c", SERVER, str(port), protocol]
    with _server(cmd, env, f"http://127.0.0.1:{port}/health", work / "server.log"):
        pid = _server_pid(port)
        _pin(pid, {server_cpu})
        held = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        held.putrequest("POST", "/predict")
        held.putheader("Content-Type", "application/json")
        held.putheader("Content-Length", str(len(BODY)))
        held.endheaders(BODY[:-1])
        time.sleep(0.5)
        script = work / "refusal.lua"
        script.write_text(LUA)
        wrk = [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{SECONDS}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/predict",
        ]
        shed_before, before = _shed(port), _cpu_seconds(pid)
        out = subprocess.run(
            wrk, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, client_cpus)
        ).stdout
        cpu = _cpu_seconds(pid) - before
        shed = _shed(port) - shed_before
        held.close()
    answers = int(re.search(r"(\d+) requests in", out).group(1))
    if not answers <= shed <= answers + CONNECTIONS:  # wrk does not count the answers in flight at its end
        raise RuntimeError(f"{answers} answers but {shed} refusals counted:\n{out}")
    return {"answers_per_s": answers / SECONDS, "cpu_us": 1e6 * cpu / answers}


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (.ci/setup.d/40-serving.sh installs Debian's)")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("needs two CPUs: one for the worker, one for wrk")
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="bench-refusal-") as tmp:
        for _ in range(ROUNDS):
            for side, protocol in SIDES.items():
                runs[side].append(_round(Path(tmp), protocol, cpus[-1], set(cpus[:-1])))
    print(f"load average {os.getloadavg()[0]:.1f}; {ROUNDS} rounds of {SECONDS} s, {CONNECTIONS} connections")
    print("| refused in | worker CPU per refusal (us, median) | all rounds | answers/s (median) |")
    print("| --- | ---: | --- | ---: |")
    for side, results in runs.items():
        costs = [r["cpu_us"] for r in results]
        rates = [r["answers_per_s"] for r in results]
        print(
            f"| {side} | {statistics.median(costs):.1f} | {', '.join(f'{c:.1f}' for c in costs)} "
            f"| {statistics.median(rates):,.0f} |"
        )


if __name__ == "__main__":
    main()
