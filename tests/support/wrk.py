"""Debian's ``wrk`` driving an API over keep-alive connections, closed loop or at a set rate.

- Closed loop (``rate=None``): every connection sends its next request as soon as the last
  answer arrived; the throughput is what the server sustains at that concurrency.
- Paced (``rate`` requests/s): each wrk thread hands out send slots at ``rate / threads`` per
  second (LuaJIT's ``ffi`` reads the monotonic clock) and a connection whose answer arrived
  waits for the next free slot. Whatever the server does, the offered rate stays at ``rate``
  while connections are free; a server slower than that keeps every connection busy, and the
  rate falls to what ``connections`` clients waiting for it can send (the run reports it).

Every answer's status is counted; a 503 or 429 must carry ``Retry-After`` and a JSON ``error``
body, and the run counts those that do not. Latencies are wrk's (all answers together).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } rk_wrk_timespec;
int clock_gettime(int clk_id, rk_wrk_timespec *tp);
]]
local ts = ffi.new("rk_wrk_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1000000
end

local bodies = {
%(bodies)s
}
local path = [==[%(path)s]==]
local i = 0
local interval = nil
local next_slot = nil
local threads = {}

statuses = {}
refused_without_retry_after = 0
refused_without_error_body = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  if args[1] then interval = 1000 / tonumber(args[1]) end
end

function request()
  i = (i %% #bodies) + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, bodies[i])
end

%(delay)s

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 503 or status == 429 then
    if headers["retry-after"] == nil and headers["Retry-After"] == nil then
      refused_without_retry_after = refused_without_retry_after + 1
    end
    if body == nil or not string.find(body, '"error":', 1, true) then
      refused_without_error_body = refused_without_error_body + 1
    end
  end
end

function done(summary, latency, requests)
  local merged, no_retry, no_body = {}, 0, 0
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do merged[status] = (merged[status] or 0) + n end
    no_retry = no_retry + t:get("refused_without_retry_after")
    no_body = no_body + t:get("refused_without_error_body")
  end
  local parts = {}
  for status, n in pairs(merged) do table.insert(parts, string.format("%%d:%%d", status, n)) end
  io.write(string.format(
    "WRK statuses=%%s no_retry_after=%%d no_error_body=%%d requests=%%d duration_us=%%d "
      .. "connect=%%d read=%%d write=%%d timeout=%%d p50_us=%%d p99_us=%%d max_us=%%d\n",
    table.concat(parts, ","), no_retry, no_body, summary.requests, summary.duration,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

_PACED = """
function delay()
  local now = now_ms()
  if next_slot == nil or next_slot < now then next_slot = now end
  local wait = next_slot - now
  next_slot = next_slot + interval
  return math.floor(wait)
end
"""


@dataclass
class WrkResult:
    statuses: dict[int, int]
    refused_without_retry_after: int
    refused_without_error_body: int
    requests: int
    seconds: float
    socket_errors: dict[str, int]  # connect, read, write, timeout
    p50_ms: float
    p99_ms: float
    max_ms: float
    output: str = field(repr=False, default="")

    @property
    def rate(self) -> float:
        """Answers per second, all statuses."""
        return self.requests / self.seconds if self.seconds else 0.0

    def count(self, *statuses: int) -> int:
        return sum(self.statuses.get(s, 0) for s in statuses)

    @property
    def refused(self) -> int:
        return self.count(503, 429)

    @property
    def other_failures(self) -> int:
        """Answers neither 200 nor a refusal (503, 429), plus socket errors and timeouts."""
        return self.requests - self.count(200) - self.refused + sum(self.socket_errors.values())


def wrk_or_skip() -> str:
    exe = shutil.which("wrk")
    if exe is None:
        pytest.skip("wrk is not installed (.ci/setup.d/40-serving.sh installs Debian's)")
    return exe


def run_wrk(
    url: str,
    path: str,
    bodies: list[bytes],
    *,
    connections: int,
    seconds: float,
    rate: float | None = None,
    threads: int = 2,
    timeout_s: float = 10.0,
    workdir: Path,
) -> WrkResult:
    """``wrk`` POSTing ``bodies`` (JSON, in turn) to ``url + path`` for ``seconds``."""
    exe = wrk_or_skip()
    threads = max(1, min(threads, connections))
    connections -= connections % threads  # wrk gives each thread connections / threads
    script = workdir / f"wrk-{'paced' if rate else 'closed'}-{abs(hash((path, len(bodies))))}.lua"
    quoted = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies)
    script.write_text(
        _LUA % {"bodies": quoted, "path": path, "delay": _PACED if rate else ""}, encoding="utf-8"
    )
    cmd = [
        exe,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        f"{timeout_s:g}s",
        "-s",
        str(script),
        url,
    ]
    if rate:
        cmd += ["--", f"{rate / threads:.3f}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 60)
    if proc.returncode or "WRK " not in proc.stdout:
        raise AssertionError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    line = proc.stdout.split("WRK ", 1)[1].splitlines()[0]
    values = dict(re.findall(r"(\w+)=(\S*)", line))
    statuses = {
        int(s): int(n) for s, n in (part.split(":") for part in values["statuses"].split(",") if part)
    }
    return WrkResult(
        statuses=statuses,
        refused_without_retry_after=int(values["no_retry_after"]),
        refused_without_error_body=int(values["no_error_body"]),
        requests=int(values["requests"]),
        seconds=int(values["duration_us"]) / 1e6,
        socket_errors={k: int(values[k]) for k in ("connect", "read", "write", "timeout")},
        p50_ms=int(values["p50_us"]) / 1000,
        p99_ms=int(values["p99_us"]) / 1000,
        max_ms=int(values["max_us"]) / 1000,
        output=proc.stdout,
    )
