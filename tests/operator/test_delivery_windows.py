"""The analysis window's numbers when pods restart, when the queries of one look take time, and
the latency check's quantiles from the buckets of that one look.

A real Prometheus scrapes, every second, a stand-in for one API pod: a loopback HTTP server that
exports the shadow's counters with the values the test sets (what a stable pod that shadows a
candidate beside version 1 exports; each test its own candidate version), or the latency buckets
of two versions, and that the test stops and starts again on the same port as a container
restarting in its pod (same ``instance``, counters from 0). The operator's adapter
(:class:`rakuten_operator.prometheus.Prometheus`) reads the window from that Prometheus.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from rakuten_operator.analysis import (
    Strategy,
    Verdict,
    histogram_quantile,
    judge,
    latency_check,
    latency_quantile,
)
from rakuten_operator.prometheus import Prometheus
from tests.operator.latency_samples import bucket_lines, histogram, latencies
from tests.support import StandInHttpServer, free_port, wait_until
from tests.support.prometheus import instant_query, start_prometheus

pytestmark = pytest.mark.slow


def scored_series(candidate: str) -> str:
    return f'rakuten_shadow_samples_total{{model_version="{candidate}",result="scored"}}'


def agreed_series(candidate: str) -> str:
    return f'rakuten_shadow_agreements_total{{model_version="{candidate}"}}'


class CounterPod:
    """``/metrics`` with a candidate's scored samples and agreements, on a fixed loopback port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.candidate, self.scored, self.agreed = "", 0.0, 0.0
        self.latency: dict[str, float] = {}
        self.server: StandInHttpServer | None = None

    def start(self, candidate: str, scored: float, agreed: float) -> CounterPod:
        """Start (again: the previous process stops first) exporting ``candidate``'s counters."""
        self.stop()
        self.candidate = candidate
        self.set(scored, agreed)

        def metrics(_request):
            body = "".join(f"{series} {value}\n" for series, value in self.values.items()).encode()
            return 200, body, {"Content-Type": "text/plain; version=0.0.4"}

        self.server = StandInHttpServer(metrics, lambda r: False, port=self.port).start()
        return self

    def set(self, scored: float, agreed: float) -> None:
        self.scored, self.agreed = scored, agreed
        # one assignment: a scrape reads both values of one set()
        self.values = {scored_series(self.candidate): scored, agreed_series(self.candidate): agreed,
                       **self.latency}  # fmt: skip

    def set_latency(self, stable: list[float], candidate: list[float]) -> None:
        """Export the latency buckets of version 1 (``stable``) and of the candidate (seconds)."""
        self.latency = {**bucket_lines("1", stable), **bucket_lines(self.candidate, candidate)}
        self.set(self.scored, self.agreed)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.latency = {}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A counter pod (namespace ``windows``) and the Prometheus scraping it: (pod, Prometheus URL)."""
    pod = CounterPod(free_port())
    prometheus, url = start_prometheus(
        tmp_path_factory.mktemp("windows-prometheus"),
        f"127.0.0.1:{pod.port}",
        labels={"namespace": "windows"},
    )
    yield pod, url
    pod.stop()
    prometheus.stop()


def sel(series: str, window: str = "") -> str:
    """``series`` in the pod's namespace, as a range selector when ``window`` is given."""
    selector = series.replace("{", '{namespace="windows",')
    return f"{selector}[{window}]" if window else selector


def wait_scraped(url: str, candidate: str, scored: float) -> None:
    """Until Prometheus holds a scrape where the pod exported ``scored`` for ``candidate``."""

    def latest() -> float | None:
        rows = instant_query(url, sel(scored_series(candidate)))
        return float(rows[0]["value"][1]) if rows else None

    wait_until(lambda: latest() == scored, 30, 0.1, f"a scrape of scored={scored} (now {latest()})")


def sample_times(url: str, series: str) -> list[tuple[float, float]]:
    """(timestamp, value) of every scrape of ``series`` in the last minute."""
    rows = instant_query(url, sel(series, "1m"))
    return [(float(t), float(v)) for t, v in rows[0]["values"]] if rows else []


def test_a_counter_reset_within_a_series_counts_from_zero(scraped):
    """A container restart keeps the pod's ``instance``: its counters drop to 0 in the same series."""
    pod, url = scraped
    started = time.time()
    pod.start("2", scored=2000, agreed=1900)  # counted before the window, at another agreement rate
    wait_scraped(url, "2", 2000)
    pod.set(scored=2040, agreed=1938)  # 40 samples in the window, 38 agreeing
    wait_scraped(url, "2", 2040)
    pod.stop()
    pod.start("2", scored=0, agreed=0)  # restarted on the same port: same series, from 0
    wait_scraped(url, "2", 0)
    pod.set(scored=40, agreed=38)
    wait_scraped(url, "2", 40)
    seconds = time.time() - started + 2

    signals, results = Prometheus(url).signals("windows", "1", "2", seconds, canary=False)
    assert results["shadow_scored"] == 80 and results["shadow_agreements"] == 76
    assert signals.requests == 80 and signals.agreement == pytest.approx(0.95)

    # what a max - min over the window reads of the same series: the counts since the pod's start
    w = f"{int(seconds) + 1}s"
    series = scored_series("2")
    max_min = instant_query(url, f"max_over_time({sel(series, w)}) - min_over_time({sel(series, w)})")
    assert float(max_min[0]["value"][1]) == 2040, "the situation built: max - min misreads the reset"
    pod.stop()


def test_the_numbers_of_one_look_come_from_one_snapshot(scraped, monkeypatch):
    """Each query of a look reaches Prometheus 0.75 s after the previous answer (a slow network, a
    loaded Prometheus): a window read query by query slides between the scored samples and the
    agreements. A burst of scored samples (all agreeing) then a slow trickle: a window that slides
    past the burst's first scrape counts the burst in one number and not in the other."""
    pod, url = scraped
    pod.start("3", scored=0, agreed=0)  # a candidate of its own: no other test's samples in the window
    wait_scraped(url, "3", 0)
    pod.set(scored=100, agreed=100)  # the burst: a whole scored batch
    wait_scraped(url, "3", 100)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            pod.set(scored=pod.scored + 2, agreed=pod.agreed + 2)

    threading.Thread(target=trickle, daemon=True).start()
    try:
        last_zero = max(t for t, v in sample_times(url, scored_series("3")) if v == 0)
        # the look starts while the window (5 s) still holds the last scrape before the burst
        time.sleep(max(0.0, last_zero + 3.0 - time.time()))
        real_get = httpx.get

        def slow_get(*args, **kwargs):
            time.sleep(0.75)
            return real_get(*args, **kwargs)

        monkeypatch.setattr(httpx, "get", slow_get)
        signals, results = Prometheus(url).signals("windows", "1", "3", 5, canary=False)
        monkeypatch.setattr(httpx, "get", real_get)
    finally:
        stop.set()
        pod.stop()
    assert results["shadow_scored"] >= 100, f"the window holds the burst: {results}"
    assert results["shadow_agreements"] == results["shadow_scored"], f"an identical candidate: {results}"
    assert signals.agreement == 1.0
    verdict = judge(Strategy(shadow_min_requests=50), -1, signals, 60)
    assert verdict.verdict == Verdict.CONTINUE, verdict.summary()


def test_the_latency_quantiles_come_from_the_buckets_of_the_one_snapshot(scraped):
    """An identical canary with 3 slow requests of 67 (a good candidate once rolled back on them):
    the buckets read in the counters' snapshot are the exported counts, the quantile computed from
    them is PromQL's ``histogram_quantile`` of the same window, and the check compares the p92.5
    those 67 requests support, where PromQL's p99 ratio (the check before) broke the limit."""
    pod, url = scraped
    stable, canary = latencies(450, slow=(0.03, 0.04, 0.06, 0.08)), latencies(67, slow=(0.055, 0.06, 0.15))
    started = time.time()
    pod.start("4", scored=0, agreed=0)
    pod.set_latency([], [])  # the series exist from 0 before the first request (as on the API)
    wait_scraped(url, "4", 0)
    wait_until(lambda: instant_query(url, sel(f'{BUCKET}{{model_version="4"}}')), 30, 0.1, "bucket series")
    pod.set_latency(stable, canary)
    pod.set(scored=1, agreed=1)  # marks the scrape that holds the buckets
    wait_scraped(url, "4", 1)
    seconds = time.time() - started + 2
    try:
        signals, _ = Prometheus(url).signals("windows", "1", "4", seconds, canary=True)
    finally:
        pod.stop()
    assert signals.stable_latency == histogram(stable) and signals.candidate_latency == histogram(canary)

    def promql(q: float, version: str) -> float:
        buckets = sel(f'{BUCKET}{{model_version="{version}"}}', f"{int(seconds) + 1}s")
        rows = instant_query(url, f"histogram_quantile({q}, sum by (le) (increase({buckets})))")
        return float(rows[0]["value"][1])

    q = latency_quantile(67)
    for version, buckets in (("1", signals.stable_latency), ("4", signals.candidate_latency)):
        for quantile in (0.5, q, 0.99):
            assert histogram_quantile(quantile, buckets) == pytest.approx(promql(quantile, version), rel=1e-6)
    assert promql(0.99, "4") / promql(0.99, "1") > 2.0, "the situation built: the p99 ratio breaks 2.0"
    check = latency_check(signals, 2.0)
    assert check.ok and check.quantile == q and check.sample == 67, check.describe()
    assert check.describe().startswith("p99_latency_ratio 1.03 as p92.5 of 67 requests")


BUCKET = "rakuten_model_request_duration_seconds_bucket"
