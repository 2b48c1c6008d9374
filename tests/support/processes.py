"""Ports, polling and the processes the tests start: servers on loopback, stopped by their own id.

Every :class:`ManagedProcess` writes its output to a log file; when a test fails, the plugin in
``tests.support.plugin`` adds what each process wrote during that test to the failure report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

VENV_BIN = Path(sys.executable).parent
CLI = [sys.executable, "-m", "rakuten_mlops.cli"]  # `rakuten-mlops` as a subprocess of this venv
LOG_TAIL = 4000


def free_port() -> int:
    """A loopback port nothing listens on right now (also used as a port where nothing answers)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports (held together while chosen, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.2,
    what: str = "",
    *,
    process: ManagedProcess | subprocess.Popen | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that value.

    A predicate that raises an HTTP or socket error counts as "not yet". Fails with ``what``
    after ``timeout`` seconds, or at once when ``process`` has exited (with its log).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if process is not None and process.poll() is not None:
            log = process.log_tail() if isinstance(process, ManagedProcess) else ""
            raise AssertionError(f"{what or predicate}: the process exited with {process.poll()}\n{log}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what or predicate} (last: {last!r})"
            )
        time.sleep(interval)


def wait_http(
    url: str,
    timeout: float,
    ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
    *,
    process: ManagedProcess | subprocess.Popen | None = None,
    describe: Callable[[], str] = lambda: "",
) -> httpx.Response:
    """GET ``url`` until ``ok(response)``; return that response. ``describe`` adds context on failure."""
    last: list[object] = [None]

    def answered() -> httpx.Response | None:
        response = httpx.get(url, timeout=5)
        last[0] = f"HTTP {response.status_code}: {response.text[:300]}"
        return response if ok(response) else None

    try:
        return wait_until(answered, timeout, 0.2, url, process=process)
    except AssertionError as exc:
        raise AssertionError(f"{exc} ({last[0]})\n{describe()}") from None


class ManagedProcess:
    """A command run in its own process group with its output in ``log``; stopped by its id.

    ``start()`` waits until ``ready_url`` answers (``ready`` decides what counts as an answer);
    ``stop()`` sends SIGTERM (to the whole group when ``group_stop``), then SIGKILL to the group.
    """

    started: list[ManagedProcess] = []  # every process of the session, for failure reports

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        inherit_env: bool = True,
        cwd: Path | None = None,
        ready_url: str | None = None,
        ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
        group_stop: bool = True,
    ) -> None:
        self.name, self.cmd, self.log_path = name, [str(c) for c in cmd], Path(log)
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        self.cwd, self.ready_url, self.ready, self.group_stop = cwd, ready_url, ready, group_stop
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        ManagedProcess.started.append(self)
        if self.ready_url:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120) -> httpx.Response:
        assert self.ready_url, f"{self.name} has no readiness URL"
        return wait_http(self.ready_url, timeout, self.ready, process=self)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 20) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL its process group; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                if self.group_stop:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                else:
                    self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.proc.wait(10)
        if self.group_stop:
            self._kill_group()  # children left behind by a parent that exited
        return self.proc.returncode

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = LOG_TAIL) -> str:
        return self.output()[-chars:]

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0
