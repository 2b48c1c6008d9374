"""Where wrk's 2 keep-alive connections land with 2 uvicorn workers: one shared listening socket
(uvicorn's ``--workers``, what ``rakuten-mlops serve`` and ``mlflow models serve`` run) against one
``SO_REUSEPORT`` socket per worker (the kernel picks a socket by a hash of each connection's
addresses, as gunicorn's ``reuse_port`` and nginx's ``reuseport`` do).

``make bench-serve`` runs its batches with 2 connections; a worker holding both serves alone.
Both servers run the same small ASGI app (about 20 ms of CPU per request, a 1,000-product
batch's order of magnitude) side by side; each trial starts ``wrk -t2 -c2`` against one, then
the other, and reads with ``ss`` which processes hold the established connections.
BENCH_PLACEMENT_TRIALS (default 30).

Run: ``python -m benchmarks.bench_placement`` (about a minute and a half).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TRIALS = int(os.environ.get("BENCH_PLACEMENT_TRIALS", "30"))
APP = """
import time

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    started = time.perf_counter()
    while time.perf_counter() - started < 0.02:
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""
SHARED = """
import sys, uvicorn
uvicorn.run("placement_app:app", host="127.0.0.1", port=int(sys.argv[1]), workers=2, log_level="warning")
"""
# two processes, each with its own socket bound to the same port (the port was free: bound in turn)
REUSE_PORT = """
import socket, sys, uvicorn
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
uvicorn.Server(uvicorn.Config("placement_app:app", log_level="warning")).run(sockets=[sock])
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _holders(port: int) -> int:
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
    ).stdout
    return len(set(re.findall(r"pid=(\d+)", listing)))


def main() -> None:
    if shutil.which("wrk") is None or shutil.which("ss") is None:
        print("wrk and ss are needed")
        return
    print(f"load average {os.getloadavg()[0]:.1f}; {TRIALS} trials per side")
    with tempfile.TemporaryDirectory(prefix="bench-placement-") as tmp:
        Path(tmp, "placement_app.py").write_text(APP)
        env = {**os.environ, "PYTHONPATH": tmp}
        ports = {"shared socket": _free_port(), "SO_REUSEPORT socket per worker": _free_port()}
        commands = {
            "shared socket": [[sys.executable, "-c", SHARED, str(ports["shared socket"])]],
            "SO_REUSEPORT socket per worker": [
                [sys.executable, "-c", REUSE_PORT, str(ports["SO_REUSEPORT socket per worker"])]
            ]
            * 2,
        }
        procs = [
            subprocess.Popen(cmd, cwd=tmp, env=env, start_new_session=True)
            for cmds in commands.values()
            for cmd in cmds
        ]
        try:
            for port in ports.values():
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                        break
                    time.sleep(0.3)
            spread: dict[str, list[int]] = {name: [] for name in ports}
            for _ in range(TRIALS):
                for name, port in ports.items():
                    wrk = subprocess.Popen(
                        ["wrk", "-t2", "-c2", "-d1s", f"http://127.0.0.1:{port}/"], stdout=subprocess.DEVNULL
                    )
                    time.sleep(0.4)
                    spread[name].append(_holders(port))
                    wrk.wait()
                    time.sleep(0.2)
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(30)
    for name, counts in spread.items():
        print(f"{name}: the 2 connections on 2 workers in {counts.count(2)} of {len(counts)} trials {counts}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
