"""Fast tests of the cross-worker reload signal and of the multiprocess metrics clean-up.

Two :class:`ModelStore` objects sharing one directory stand for two workers of one server; the
registry is a dict and a "model" is a tiny object, so only the signalling logic runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from rakuten_mlops.serving import model_store
from rakuten_mlops.serving.metrics import reap_dead_workers
from rakuten_mlops.serving.model_store import (
    RELOAD_SIGNAL_FILE,
    LoadedModel,
    ModelStore,
    RegistryVersion,
    ReloadSignal,
)


class FakeWorker(ModelStore):
    """A model store whose registry is ``registry["production"]`` (a version string)."""

    def __init__(self, settings, registry: dict, signal):
        super().__init__(settings, reload_signal=signal)
        self.registry = registry
        self.loads: list[tuple[str, bool]] = []
        self.failures_left = 0
        self.gate: threading.Event | None = None

    def load(self, version=None, *, force=False):
        self.loads.append((self.registry["production"], force))
        return super().load(version, force=force)

    def resolve(self, version=None):
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("registry hiccup")
        return RegistryVersion(self.registry["production"], None, "", {})

    def _load_version(self, target):
        if self.gate is not None:
            self.gate.wait(5)
            self.gate = None
        return LoadedModel(
            name=self.name,
            version=target.version,
            alias=self.alias,
            run_id=None,
            scores={},
            tags={},
            loaded_at=datetime.now(UTC),
            pipeline=None,
            classes=np.array([10, 40]),
        )


@pytest.fixture
def fast_checks(monkeypatch):
    monkeypatch.setattr(model_store, "RELOAD_CHECK_SECONDS", 0.02)


@pytest.fixture
def workers(settings, tmp_path, fast_checks):
    settings.model_poll_seconds = 0  # as under the operator: nothing moves by itself
    registry = {"production": "1"}

    def make(n: int) -> list[FakeWorker]:
        return [FakeWorker(settings, registry, ReloadSignal(tmp_path)) for _ in range(n)]

    return registry, make


async def _until(predicate, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _run(workers_: list[FakeWorker], scenario) -> None:
    async def main():
        tasks = [asyncio.create_task(w.run_background()) for w in workers_]
        try:
            await _until(lambda: all(w.ready for w in workers_))
            await scenario()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_an_admin_reload_reaches_every_worker_once(workers):
    registry, make = workers
    a, b, c = make(3)

    async def scenario():
        registry["production"] = "2"
        assert await asyncio.to_thread(a.reload_all_workers) is True  # a answers synchronously
        assert a.current.version == "2"
        await _until(lambda: b.current.version == c.current.version == "2")
        await asyncio.sleep(0.2)  # many more checks: nobody reloads again

    _run([a, b, c], scenario)
    assert a.loads == [("1", False), ("2", False)]  # its own announcement does not reload it twice
    assert b.loads == c.loads == [("1", False), ("2", False)]


def test_force_is_passed_on_and_a_new_generation_is_needed_each_time(workers):
    registry, make = workers
    a, b = make(2)

    async def scenario():
        before = b.current
        assert await asyncio.to_thread(a.reload_all_workers, force=True) is True  # same version
        await _until(lambda: b.current is not before)
        assert b.current.version == "1"
        await asyncio.to_thread(b.reload_all_workers)  # b answers this time: a follows
        await _until(lambda: len(a.loads) == 3)
        await asyncio.sleep(0.2)

    _run([a, b], scenario)
    assert a.loads == [("1", False), ("1", True), ("1", False)]
    assert b.loads == [("1", False), ("1", True), ("1", False)]


def test_a_reload_announced_during_the_first_load_is_followed(workers):
    registry, make = workers
    a, late = make(2)
    late.gate = threading.Event()  # late's first load hangs after the registry answered "1"

    async def scenario():
        task = asyncio.create_task(late.run_background())
        try:
            await _until(lambda: late.loads == [("1", False)])
            registry["production"] = "2"
            await asyncio.to_thread(a.reload_all_workers)
            late.gate.set()
            await _until(lambda: late.ready and late.current.version == "2")
        finally:
            task.cancel()

    _run([a], scenario)
    assert late.loads == [("1", False), ("2", False)]


def test_a_generation_left_from_before_is_not_a_request(workers):
    registry, make = workers
    (a,) = make(1)
    a.reload_signal.announce(force=True)  # an earlier reload, before this worker started

    async def scenario():
        await asyncio.sleep(0.2)

    _run([a], scenario)
    assert a.loads == [("1", False)]


def test_a_failed_follow_up_load_is_retried(workers):
    registry, make = workers
    a, b = make(2)

    async def scenario():
        registry["production"] = "2"
        b.failures_left = 2
        await asyncio.to_thread(a.reload_all_workers)
        await _until(lambda: b.current.version == "2")

    _run([a, b], scenario)
    assert [version for version, _ in b.loads] == ["1", "2", "2", "2"]


def test_missing_or_corrupt_signal_is_ignored(workers, tmp_path):
    registry, make = workers
    (a,) = make(1)
    signal = ReloadSignal(tmp_path)
    assert signal.read() is None  # missing
    for garbage in (b"", b"{not json", b"[1, 2]", b'"text"', b'{"force": true}', b"\xff\xfe"):
        signal.path.write_bytes(garbage)
        assert signal.read() is None, garbage

    async def scenario():
        registry["production"] = "2"
        signal.path.write_bytes(b"{half a fi")
        await asyncio.sleep(0.2)
        assert a.current.version == "1"  # nothing readable: no reload
        signal.announce()
        await _until(lambda: a.current.version == "2")

    _run([a], scenario)


def test_announce_replaces_the_file_atomically(tmp_path):
    signal = ReloadSignal(tmp_path)
    first, second = signal.announce(), signal.announce(force=True)
    assert first != second and signal.read() == second
    assert os.listdir(tmp_path) == [RELOAD_SIGNAL_FILE]  # no temporary file left behind
    body = json.loads((tmp_path / RELOAD_SIGNAL_FILE).read_text())
    assert body["generation"] == second.generation and body["force"] is True and body["pid"] == os.getpid()


def test_single_process_needs_no_directory(settings, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings.model_poll_seconds = 0
    store = FakeWorker(settings, {"production": "1"}, "env")
    assert store.reload_signal is None
    # poll off and no signal: the background task ends after the first load, as before
    asyncio.run(asyncio.wait_for(store.run_background(), 2))
    assert store.current.version == "1"
    store.registry["production"] = "2"
    assert store.reload_all_workers() is True  # loads; nothing to announce
    assert store.current.version == "2"


def test_unwritable_directory_does_not_fail_the_reload(settings, tmp_path):
    store = FakeWorker(settings, {"production": "1"}, ReloadSignal(tmp_path / "gone"))
    assert store.reload_all_workers() is True
    assert store.current.version == "1"


def test_signal_directory_is_the_multiprocess_directory(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert ModelStore(settings).reload_signal.path == tmp_path / RELOAD_SIGNAL_FILE


def test_reap_dead_workers_removes_only_live_gauges_of_gone_processes(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = int(gone.stdout)
    alive = os.getppid()
    names = [
        f"gauge_livemax_{dead}.db",
        f"gauge_livemin_{dead}.db",
        f"gauge_livesum_{dead}.db",
        f"counter_{dead}.db",  # counts of a gone worker still count
        f"histogram_{dead}.db",
        f"gauge_livemax_{alive}.db",
        f"gauge_livemax_{os.getpid()}.db",
        "rakuten-reload-generation.json",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert reap_dead_workers(str(tmp_path)) == [dead]
    assert sorted(os.listdir(tmp_path)) == sorted(names[3:])
