"""Constant-rate HTTP load with the outcome of every request, for the faults-and-load scenarios.

:func:`start_load` runs the generator in a process of its own (``python -m tests.support.load``)
and returns a :class:`LoadRun`; ``LoadRun.result()`` waits for it and gives a :class:`LoadResult`:
for each request its scheduled time, send and completion times, HTTP status (0 for a connection
error or a timeout), latency, and, from JSON bodies, the ``model_version`` of the response and of
each prediction and the ``prediction_id`` of each prediction. ``LoadResult.window(t0, t1)`` gives
the failures, p99 and versions of the requests scheduled in a time window, so a scenario compares
the minutes of a fault with the minutes before it.

A plan with ``retries`` behaves as an HTTP client that honours ``Retry-After``: a ``503`` carrying
the header (the API's admission control refusing a request beyond its in-flight limit) is sent
again after the delay it names, up to ``retries`` times. The result keeps, per request, when each
refusal came; a request is failed only by its last answer (a refusal after the last retry is a
client giving up), and its latency counts from its due time to that last answer.

Capacity, the reference the scenarios take a share of, is :func:`generator_capacity`: the same
generator in a closed loop (``connections`` clients, each sending its next request when its last
is answered) against the same server, in its own process, so the CPU the generator takes from a
2-core machine is taken while the capacity is measured too. :func:`closed_loop_capacity`
(Debian's ``wrk``, C, negligible CPU per request) is what the server does alone: a figure to
compare, not a rate the Python generator can drive (docs/chaos.md).

Why an asyncio generator in Python and not ``wrk`` for the constant rate:

- it is open-loop: request ``i`` is due at ``i / rate`` seconds whatever happened to the earlier
  ones, and its latency counts from that due time. ``wrk``'s ``delay()`` only spaces the requests
  of one connection, so when the server stalls the requests it should have sent are never sent
  and the stall hides from the percentiles (coordinated omission): the opposite of what a fault
  scenario must show;
- the scenarios need each response's body (model versions, prediction ids); in ``wrk`` that is
  Lua string matching written to files per thread;
- it stays cheap on 2 cores: plain asyncio streams (uvloop when installed), one small request
  writer and one ``Content-Length`` reader, no HTTP library, ``orjson`` for the bodies. Its
  scheduler wakes at most once a millisecond (``TICK_SECONDS``) and sends every request then due:
  uvloop times its timers in whole milliseconds, so sleeping until each due time (a tenth of a
  millisecond apart at 9,000 requests/s) spun the loop between them and cost the generator a
  core. The generator's own CPU time is measured and reported (``LoadResult.cpu_seconds``), so
  a reader sees the share it took from the server.

The generator's closed loop and its open loop do the same work per answer (the same request
bytes, the same header reader, the same JSON read of the body), so a share of the first is a
rate the second can send; :meth:`LoadResult.send_lag` says whether it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.processes import ManagedProcess


@dataclass(frozen=True)
class LoadPlan:
    """``rate`` requests/s for ``seconds`` to ``url``, POSTing the ``bodies`` in turn (JSON)."""

    url: str
    bodies: Sequence[bytes | str]
    rate: float
    seconds: float
    max_connections: int = 128  # requests due while all are busy wait for one (latency counts)
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    collect_ids: bool = True  # keep every prediction id (the prediction-log checks need them)
    retries: int = 0  # a 503 with Retry-After is sent again after that delay, this many times at most
    closed_loop: int = 0  # > 0: that many clients, each sending when its last answer came (no rate)
    warmup: float = 0.0  # closed loop: seconds run before the counting starts

    def to_json(self) -> str:
        return json.dumps(
            {
                "url": self.url,
                "bodies": [b.decode() if isinstance(b, bytes) else b for b in self.bodies],
                "rate": self.rate,
                "seconds": self.seconds,
                "max_connections": self.max_connections,
                "timeout": self.timeout,
                "headers": self.headers,
                "collect_ids": self.collect_ids,
                "retries": self.retries,
                "closed_loop": self.closed_loop,
                "warmup": self.warmup,
            }
        )


@dataclass
class Window:
    """What the requests scheduled in one time window got."""

    requests: int
    ok: int
    failed: int
    statuses: dict[int, int]  # of the last answers
    refusals: int  # 503 answers with Retry-After, including those a retry then got past
    retried: int  # requests refused at least once that succeeded on a retry
    p50: float | None
    p99: float | None
    max_latency: float | None

    def describe(self) -> str:
        p99 = "n/a" if self.p99 is None else f"{self.p99 * 1000:.1f} ms"
        return f"{self.requests} requests, {self.failed} failed, {self.retried} retried, p99 {p99}"


@dataclass
class LoadResult:
    """Every request of one run, in the order they were due (times are seconds since ``started``,
    a wall-clock ``time.time()`` so scenarios can place their own events on the same axis)."""

    started: float
    rate: float
    due: list[float]
    sent: list[float]
    done: list[float]
    status: list[int]
    error: list[str | None]
    versions: list[list[str]]  # per request: the response's model_version, then each prediction's
    prediction_ids: list[list[str] | int]  # an int (how many) when the plan did not collect them
    cpu_seconds: float
    wall_seconds: float
    refused: list[list[float]]  # per request: when each 503 with Retry-After answered it
    wakeups: int = 0  # times the scheduler woke to send the requests then due
    # (when, seconds): the scheduler woke more than STALL_SECONDS after its previous wake-up, the
    # generator's process held off the CPU (or its loop busy) that long; its requests then due
    # leave together once it runs again
    stalls: list[tuple[float, float]] = field(default_factory=list)
    gc_collections: int = 0  # passes of the cyclic garbage collector during the run (it is off)

    @property
    def latency(self) -> list[float]:
        return [d - s for d, s in zip(self.done, self.due, strict=True)]

    def window(self, start: float = 0.0, end: float = math.inf) -> Window:
        """The requests due in [start, end) seconds after the run started."""
        picked = [i for i, t in enumerate(self.due) if start <= t < end]
        latencies = sorted(self.done[i] - self.due[i] for i in picked if self.status[i] // 100 == 2)
        statuses: dict[int, int] = {}
        for i in picked:
            statuses[self.status[i]] = statuses.get(self.status[i], 0) + 1
        ok = sum(n for s, n in statuses.items() if s // 100 == 2)
        return Window(
            requests=len(picked),
            ok=ok,
            failed=len(picked) - ok,
            statuses=statuses,
            refusals=sum(len(self.refused[i]) for i in picked),
            retried=sum(1 for i in picked if self.refused[i] and self.status[i] // 100 == 2),
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            max_latency=latencies[-1] if latencies else None,
        )

    def failures(self, limit: int = 5) -> list[str]:
        """A few failed requests, described (for assertion messages)."""
        out = [
            f"t={self.due[i]:.2f}s status={self.status[i]} {self.error[i] or ''}".strip()
            for i in range(len(self.status))
            if self.status[i] // 100 != 2
        ]
        return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])

    def refusal_times(self) -> list[float]:
        """When each refusal (503 with Retry-After) came, in seconds since the run started, sorted."""
        return sorted(t for times in self.refused for t in times)

    def returned_ids(self) -> set[str]:
        return {pid for i, ids in enumerate(self.prediction_ids) if self.status[i] // 100 == 2 for pid in ids}

    def returned_predictions(self) -> int:
        """How many predictions the successful responses carried."""
        return sum(ids if isinstance(ids, int) else len(ids) for ids in self.prediction_ids)

    def cpu_share(self) -> float:
        """The generator's CPU time over the run's wall time (1.0 = one core)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def stalled(self) -> tuple[int, float, float]:
        """(stalls of the generator over ``STALL_SECONDS``, their total, the longest), in seconds."""
        gaps = [gap for _, gap in self.stalls]
        return len(gaps), sum(gaps), max(gaps, default=0.0)

    def send_lag(self, q: float = 99) -> float:
        """The ``q``-th percentile of how late first attempts were sent after their due time
        (seconds): the generator's own backlog, plus waits for a free connection. Near zero
        when the generator keeps its schedule."""
        first = sorted(
            (sent - due)
            for sent, due, refused in zip(self.sent, self.due, self.refused, strict=True)
            if not refused
        )
        return percentile(first, q) or 0.0

    @classmethod
    def from_json(cls, data: dict) -> LoadResult:
        return cls(**data)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class LoadRun(ManagedProcess):
    """The generator's process; ``result()`` waits for it to finish and reads what it wrote."""

    def __init__(self, plan: LoadPlan, workdir: Path, name: str = "load"):
        workdir.mkdir(parents=True, exist_ok=True)
        self.plan_path, self.result_path = workdir / f"{name}-plan.json", workdir / f"{name}-result.json"
        self.plan_path.write_text(plan.to_json())
        self.result_path.unlink(missing_ok=True)
        self.plan = plan
        cmd = [sys.executable, "-m", "tests.support.load", str(self.plan_path), str(self.result_path)]
        super().__init__(f"load generator ({name})", cmd, workdir / f"{name}.log", cwd=Path.cwd())

    def result(self, extra_timeout: float = 120) -> LoadResult:
        assert self.proc is not None, "the load run was not started"
        try:
            self.proc.wait(self.plan.seconds + self.plan.timeout + extra_timeout)
        except subprocess.TimeoutExpired:
            self.stop(grace=5)
            raise AssertionError(f"the load generator did not finish:\n{self.log_tail()}") from None
        if self.proc.returncode != 0 or not self.result_path.exists():
            raise AssertionError(f"the load generator failed ({self.proc.returncode}):\n{self.log_tail()}")
        return LoadResult.from_json(json.loads(self.result_path.read_text()))


def start_load(plan: LoadPlan, workdir: Path, name: str = "load") -> LoadRun:
    """Start the generator in its own process (it runs ``plan`` at once)."""
    run = LoadRun(plan, workdir, name)
    run.start()
    return run


@dataclass
class Capacity:
    """What :func:`generator_capacity` measured: answers per second and how they went."""

    rate: float  # 2xx answers per second
    ok: int
    refused: int  # 503 with Retry-After (none expected below the API's in-flight limit)
    failed: int
    seconds: float
    window_start: float  # time.monotonic() when the counted window began (one clock for the machine)
    cpu_share: float  # the generator's CPU over the measured run (1.0 = one core)
    connections: int
    errors: list[str]


def generator_capacity(
    url: str,
    bodies: Sequence[bytes | str],
    seconds: float,
    workdir: Path,
    connections: int = 16,
    warmup: float = 2.0,
    name: str = "capacity",
) -> Capacity:
    """Answers per second this generator gets from ``url`` in a closed loop of ``connections``
    clients (requests that are not 2xx are not counted in ``rate``; they are in the result), run
    as the scenarios run it: in its own process, doing the same work per answer."""
    plan = LoadPlan(url, bodies, rate=0.0, seconds=seconds, closed_loop=connections, warmup=warmup)
    run = start_load(plan, workdir, name)
    try:
        run.proc.wait(warmup + seconds + plan.timeout + 60)
    except subprocess.TimeoutExpired:
        run.stop(grace=5)
        raise AssertionError(f"the closed loop did not finish:\n{run.log_tail()}") from None
    if run.proc.returncode != 0 or not run.result_path.exists():
        raise AssertionError(f"the closed loop failed ({run.proc.returncode}):\n{run.log_tail()}")
    data = json.loads(run.result_path.read_text())
    return Capacity(
        rate=data["ok"] / data["seconds"],
        ok=data["ok"],
        refused=data["refused"],
        failed=data["failed"],
        seconds=data["seconds"],
        window_start=data["window_start"],
        cpu_share=data["cpu_seconds"] / data["seconds"],
        connections=connections,
        errors=data["errors"],
    )


def closed_loop_capacity(url: str, body: bytes | str, seconds: float, connections: int = 16) -> float:
    """Requests/s ``wrk`` gets from ``url`` (POST ``body``) in a closed loop of ``connections``;
    raises when any request failed (a capacity measured on errors means nothing)."""
    body_text = body.decode() if isinstance(body, bytes) else body
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"rakuten-capacity-{os.getpid()}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {_lua_string(body_text)}\n"
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("CAPACITY errors=%d status=%d timeouts=%d\\n",\n'
        "    summary.errors.connect + summary.errors.read + summary.errors.write,\n"
        "    summary.errors.status, summary.errors.timeout))\n"
        "end\n"
    )
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", str(script), url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        script.unlink(missing_ok=True)
    stats = dict(re.findall(r"(\w+)=(\d+)", out.split("CAPACITY", 1)[1]))
    if any(int(v) for v in stats.values()):
        raise AssertionError(f"wrk saw errors while measuring capacity: {stats}\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def _lua_string(text: str) -> str:
    level = "=" * 3
    return f"[{level}[{text}]{level}]"


# --- the generator (runs in its own process) ----------------------------------------------------


IDLE_EXPIRY_SECONDS = 2.0  # under uvicorn's 5 s keep-alive timeout, as HTTP clients' pools do
STALL_SECONDS = 0.05  # a scheduler wake-up this late after the previous one is a stall of the generator
TICK_SECONDS = 0.001  # the scheduler wakes at most this often and sends every request then due


class _Connections:
    """Idle keep-alive connections to one server, at most ``limit`` open at a time.

    A server may close a keep-alive connection that stayed idle (uvicorn after 5 s); a request
    written on it then fails although the server never saw it. Like the pools of HTTP client
    libraries, this one closes connections idle for ``IDLE_EXPIRY_SECONDS`` and never reuses one
    the server already closed, so every failure counted is the server's.
    """

    def __init__(self, host: str, port: int, limit: int):
        self.host, self.port = host, port
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(limit)

    async def take(self):
        now = time.monotonic()
        while self.idle:
            since, reader, writer = self.idle.pop()
            if now - since < IDLE_EXPIRY_SECONDS and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    def give_back(self, conn) -> None:
        self.idle.append((time.monotonic(), *conn))

    def close_all(self) -> None:
        for _, _, writer in self.idle:
            writer.close()


async def _one(
    pool: _Connections, request: bytes, timeout: float
) -> tuple[float, int, bytes, str | None, float | None]:
    """Send one request on a pooled connection; (send time, status, body, error, Retry-After in
    seconds when the answer has one)."""
    async with pool.slots:
        sent = time.time()
        conn = None
        try:
            async with asyncio.timeout(timeout):
                conn = await pool.take()
                reader, writer = conn
                writer.write(request)
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionResetError("the server closed the connection")
                status = int(status_line.split(b" ", 2)[1])
                length, close, retry_after = 0, status_line.startswith(b"HTTP/1.0"), None
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                    elif name == b"retry-after":
                        retry_after = _seconds(value)
                body = await reader.readexactly(length) if length else b""
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            if conn is not None:
                conn[1].close()
            return sent, 0, b"", f"{exc.__class__.__name__}: {exc}"[:200], None
        if close:
            writer.close()
        else:
            pool.give_back(conn)
        return sent, status, body, None, retry_after


def _seconds(value: bytes) -> float | None:
    """A ``Retry-After`` in delay-seconds (the HTTP-date form is not used by the API)."""
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def _read_predictions(body: bytes) -> tuple[list[str], list[str]]:
    """(versions, prediction ids) of a /predict or /predict/batch answer."""
    import orjson

    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [], []
    items = data.get("predictions", [data]) if isinstance(data, dict) else []
    versions = [str(data["model_version"])] if "predictions" in data and "model_version" in data else []
    versions += [str(item.get("model_version")) for item in items if isinstance(item, dict)]
    ids = [str(item["prediction_id"]) for item in items if isinstance(item, dict) and "prediction_id" in item]
    return versions, ids


def _requests(plan: dict) -> list[bytes]:
    parts = urlsplit(plan["url"])
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = "".join(f"{k}: {v}\r\n" for k, v in plan["headers"].items())
    return [
        (
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"{headers}Content-Length: {len(body.encode())}\r\n\r\n"
        ).encode()
        + body.encode()
        for body in plan["bodies"]
    ]


def _pool(plan: dict, limit: int) -> _Connections:
    parts = urlsplit(plan["url"])
    return _Connections(parts.hostname, parts.port or 80, limit)


async def _closed_loop(plan: dict) -> dict:
    """``plan["closed_loop"]`` clients, each sending its next request as soon as its last was
    answered, for ``warmup`` then ``seconds``; the answers that came in ``seconds`` are counted."""
    clients = plan["closed_loop"]
    pool, requests = _pool(plan, clients), _requests(plan)
    counts = {"ok": 0, "refused": 0, "failed": 0}
    errors: list[str] = []
    start = time.monotonic() + plan["warmup"]
    end = start + plan["seconds"]
    cpu: list = []

    async def client(k: int) -> None:
        i = k
        while time.monotonic() < end:
            _, status, body, error, retry_after = await _one(
                pool, requests[i % len(requests)], plan["timeout"]
            )
            i += 1
            if status // 100 == 2:
                _read_predictions(body)  # the open loop's work per answer
            if not start <= time.monotonic() < end:
                continue
            if status // 100 == 2:
                counts["ok"] += 1
            elif status == 503 and retry_after is not None:
                counts["refused"] += 1
            else:
                counts["failed"] += 1
                if len(errors) < 5:
                    errors.append(f"status={status} {error or body[:200].decode(errors='replace')}")

    async def mark() -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        cpu.append(resource.getrusage(resource.RUSAGE_SELF))

    await asyncio.gather(mark(), *(client(k) for k in range(clients)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    pool.close_all()
    before = cpu[0]
    return {
        **counts,
        "errors": errors,
        "seconds": plan["seconds"],
        "window_start": start,
        "cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }


async def _generate(plan: dict) -> dict:
    if plan["closed_loop"]:
        return await _closed_loop(plan)
    pool, requests = _pool(plan, plan["max_connections"]), _requests(plan)
    total = int(plan["rate"] * plan["seconds"])
    interval = 1.0 / plan["rate"]
    results: list = [None] * total
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    collections_before = sum(g["collections"] for g in gc.get_stats())
    started = time.time()

    async def fire(i: int) -> None:
        refused: list[float] = []
        while True:
            sent, status, body, error, retry_after = await _one(
                pool, requests[i % len(requests)], plan["timeout"]
            )
            done = time.time() - started
            if status != 503 or retry_after is None:
                break
            refused.append(done)
            if len(refused) > plan["retries"]:
                break
            await asyncio.sleep(retry_after)
        if status // 100 == 2:
            versions, ids = _read_predictions(body)
            if not plan["collect_ids"]:
                ids = len(ids)
        else:
            versions, ids = [], []
            error = error or body[:200].decode(errors="replace")
        results[i] = (sent - started, done, status, error, versions, ids, refused)

    tasks = set()
    i = wakeups = 0
    stalls: list[tuple[float, float]] = []
    last = 0.0
    while i < total:
        wakeups += 1
        now = time.time() - started
        if now - last > STALL_SECONDS:
            stalls.append((last, now - last))
        last = now
        while i < total and i * interval <= now:
            task = asyncio.ensure_future(fire(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            # uvloop (libuv) times its timers in whole milliseconds: a shorter sleep returns at
            # the next loop iteration, and waiting for each due time would spin the loop
            await asyncio.sleep(max(TICK_SECONDS, i * interval - (time.time() - started)))
    while tasks:
        await asyncio.wait(list(tasks))
    wall = time.time() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    pool.close_all()
    out = {
        "started": started,
        "rate": plan["rate"],
        "due": [],
        "sent": [],
        "done": [],
        "status": [],
        "error": [],
        "versions": [],
        "prediction_ids": [],
        "refused": [],
        "cpu_seconds": (cpu_after.ru_utime + cpu_after.ru_stime)
        - (cpu_before.ru_utime + cpu_before.ru_stime),
        "wall_seconds": wall,
        "wakeups": wakeups,
        "stalls": stalls,
        "gc_collections": sum(g["collections"] for g in gc.get_stats()) - collections_before,
    }
    for n, (sent, done, status, error, versions, ids, refused) in enumerate(results):
        out["due"].append(n * interval)
        out["sent"].append(sent)
        out["done"].append(done)
        out["status"].append(status)
        out["error"].append(error)
        out["versions"].append(versions)
        out["prediction_ids"].append(ids)
        out["refused"].append(refused)
    return out


def main(argv: list[str]) -> None:
    plan_path, result_path = Path(argv[0]), Path(argv[1])
    plan = json.loads(plan_path.read_text())
    # The run keeps a record of every request (millions of tuples and lists): the cyclic garbage
    # collector's full passes walk them all, each longer than the last, and hold the event loop
    # meanwhile, so the requests due then leave in one burst. The generator makes no cycles it
    # needs collected during a run; its reference counts free the rest.
    gc.disable()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    out = asyncio.run(_generate(plan))
    temporary = result_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(out))
    temporary.replace(result_path)
    if plan["closed_loop"]:
        print(f"closed loop: {out['ok']} ok, {out['refused']} refused, {out['failed']} failed")
    else:
        print(f"{len(out['status'])} requests in {out['wall_seconds']:.1f}s, cpu {out['cpu_seconds']:.1f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
