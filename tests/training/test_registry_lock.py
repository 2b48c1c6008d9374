"""The registry lock really serialises writers, on SQLite and on Postgres."""

from __future__ import annotations

import threading
import time

from rakuten_mlops.settings import Settings


def test_registry_lock_is_exclusive(db_url, tmp_path, monkeypatch):
    from rakuten_mlops.registry import registry_lock

    monkeypatch.setenv("RAKUTEN_HOME", str(tmp_path / "home"))
    settings = Settings(database_url=db_url)
    spans: list[tuple[float, float]] = []
    barrier = threading.Barrier(3)

    def hold() -> None:
        barrier.wait()
        with registry_lock(settings):
            entered = time.monotonic()
            time.sleep(0.4)
            spans.append((entered, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(spans) == 3
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.01, spans  # never two holders at once


def test_lock_is_released_when_the_holder_fails(db_url, tmp_path, monkeypatch):
    from rakuten_mlops.registry import registry_lock

    monkeypatch.setenv("RAKUTEN_HOME", str(tmp_path / "home"))
    settings = Settings(database_url=db_url)
    try:
        with registry_lock(settings):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    start = time.monotonic()
    with registry_lock(settings):
        pass
    assert time.monotonic() - start < 5
