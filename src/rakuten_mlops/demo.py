"""`make demo`: the platform's whole life on the embedded default, explained as it runs.

Every step runs the same `rakuten-mlops` command that the cluster's workflows run, so what
you see here is what runs in production, only with SQLite and a local MLflow store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress
from rich.table import Table

console = Console(highlight=False)
CLI = [sys.executable, "-m", "rakuten_mlops.cli"]

SAMPLE_PRODUCTS = [
    ("Bâche hiver pour piscine rectangulaire 450 x 220 cm", "Bâche de protection 280 gr/m² <br />bleue"),
    ("Le Journal De Mickey N° 1254 Du 12/05/1976", ""),
    ("Manette Sans Fil Bluetooth Pour Ps4 Noir", "Manette compatible PS4 et PC avec vibrations."),
    ("Peluche Licorne Arc-En-Ciel 30 Cm", "Peluche toute douce pour enfants dès la naissance."),
    ("Lot De 3 Cahiers Clairefontaine A4 96 Pages Seyès", ""),
    ("Taille-haies sans fil 18V Bosch", "<p>Livré sans batterie ni chargeur.</p>"),
]


class Step:
    """Numbered, titled steps with a short explanation for newcomers."""

    total = 9
    n = 0

    @classmethod
    def start(cls, title: str, why: str) -> None:
        cls.n += 1
        console.rule(f"[bold]Step {cls.n}/{cls.total}: {title}")
        console.print(f"[dim]{why}[/dim]")


def run(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    """Run one `rakuten-mlops` command, showing it as a user would type it."""
    console.print(f"[cyan]$ rakuten-mlops {' '.join(args)}[/cyan]")
    res = subprocess.run([*CLI, *args], text=True, capture_output=capture)
    if capture:
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr if res.returncode else "")
    if check and res.returncode != 0:
        raise SystemExit(f"demo stopped: `rakuten-mlops {' '.join(args)}` exited with {res.returncode}")
    return res


def show_decision(path: Path) -> dict:
    decision = json.loads(path.read_text())
    table = Table(title="training result", show_header=False)
    for key in ("version", "decision", "f1_weighted", "f1_macro", "accuracy", "production_f1", "reason"):
        if key in decision and decision[key] is not None:
            value = decision[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    return decision


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiProcess:
    """`rakuten-mlops serve` in the background, stopped cleanly (SIGTERM flushes the prediction log)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ApiProcess:
        import httpx

        console.print(f"[cyan]$ rakuten-mlops serve --port {self.port}[/cyan]")
        self.proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port)])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("demo stopped: the API exited during start-up")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    console.print(f"API ready at {self.url} (docs at {self.url}/docs)")
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise SystemExit("demo stopped: the API did not become ready within 90 s")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        console.print("API stopped cleanly (its prediction log was flushed to the database)")


def classify_samples(api: ApiProcess) -> None:
    import httpx

    table = Table(title="the API classifies products it has never seen")
    for col in ("designation", "category", "confidence"):
        table.add_column(col)
    for designation, description in SAMPLE_PRODUCTS:
        res = httpx.post(f"{api.url}/predict", json={"designation": designation, "description": description})
        res.raise_for_status()
        body = res.json()
        table.add_row(designation, f"{body['category']} ({body['prdtypecode']})", f"{body['confidence']:.2f}")
    console.print(table)
    model = httpx.get(f"{api.url}/model").json()
    console.print("GET /model ->", json.dumps(model, default=str))


def send_batch(api: ApiProcess, source: Path, limit: int) -> int:
    """Send a generated batch through POST /predict/batch, as product teams would."""
    import httpx

    from rakuten_mlops.data.sources import read_source

    frame = read_source(source).frame.head(limit)
    items = [
        {"designation": d, "description": s, "productid": int(p)}
        for d, s, p in frame[["designation", "description", "productid"]].itertuples(index=False)
    ]
    sent = 0
    with Progress(console=console) as progress:
        task = progress.add_task("sending products to /predict/batch", total=len(items))
        for i in range(0, len(items), 200):
            chunk = items[i : i + 200]
            httpx.post(f"{api.url}/predict/batch", json={"items": chunk}, timeout=60).raise_for_status()
            sent += len(chunk)
            progress.update(task, advance=len(chunk))
    return sent


def main() -> None:
    home = Path(os.environ.setdefault("RAKUTEN_HOME", str(Path(".rakuten").resolve()))).resolve()
    for var in ("RAKUTEN_DATABASE_URL", "MLFLOW_TRACKING_URI", "RAKUTEN_MODEL_VERSION"):
        os.environ.pop(var, None)  # the demo always runs on the embedded default
    os.environ.setdefault("RAKUTEN_MODEL_POLL_SECONDS", "2")
    if home.exists():
        shutil.rmtree(home)
    source, drifted = home / "source", home / "drifted"
    started = time.perf_counter()
    console.print(
        Panel.fit(
            "Rakuten France product classification, end to end, on this machine.\n"
            f"Everything is kept under {home} (SQLite data DB, SQLite MLflow store, artifacts, reports).",
            title="rakuten-mlops demo",
        )
    )

    Step.start(
        "a catalogue to learn from",
        "The real dataset (85k products) is not shipped; a generator writes realistic French products in the "
        "official CSV layout, with HTML, empty descriptions and look-alike categories.",
    )
    run("data", "generate", "--rows", "20000", "--seed", "42", "--out", str(source))

    Step.start(
        "incremental loading",
        "The platform starts with 40% of the data, then each scheduled run adds a slice (3%), "
        "each in one transaction with an audit row.",
    )
    run("data", "load", "--source", str(source), "--initial-fraction", "0.4")
    run("data", "load", "--source", str(source), "--batch-fraction", "0.03")
    run("data", "status")

    Step.start(
        "first model",
        "Training logs everything to MLflow, registers a version, and the promotion gate decides whether it "
        "becomes `production` (weighted F1 >= RAKUTEN_MIN_F1 and at least as good as the current one).",
    )
    run("train", "--promote", "--output", str(home / "train-1.json"))
    show_decision(home / "train-1.json")

    Step.start(
        "more data, a new candidate",
        "A new batch arrives; the candidate is re-compared with production on the same test set.",
    )
    run("data", "load", "--source", str(source), "--batch-fraction", "0.1")
    run("train", "--promote", "--output", str(home / "train-2.json"))
    show_decision(home / "train-2.json")
    run("models")

    Step.start(
        "serving", "The API loads `models:/rakuten_classifier@production` and classifies products over HTTP."
    )
    with ApiProcess() as api:
        classify_samples(api)

        Step.start(
            "traffic that drifts",
            "A shifted batch (new vocabulary) goes through the API, which logs every prediction for monitoring.",
        )
        run(
            "data",
            "generate",
            "--rows",
            "1500",
            "--seed",
            "7",
            "--out",
            str(drifted),
            "--drift",
            "vocabulary",
            "--drift-strength",
            "0.9",
        )
        sent = send_batch(api, drifted, 1500)
        console.print(f"sent {sent:,} products through the API")
    Step.start(
        "drift check",
        "The prediction log is compared with the production model's training data (Evidently report + tests).",
    )
    run("drift", "--window", "1d")

    Step.start(
        "retraining decision", "Live F1, the data backlog and drift severity decide whether to retrain."
    )
    decision_path = home / "decision.json"
    run("decide", "--output", str(decision_path))
    decision = json.loads(decision_path.read_text())

    Step.start("acting on the decision", "Retrain only when told to; the gate still protects production.")
    if decision.get("retrain"):
        run("data", "load", "--source", str(source), "--batch-fraction", "0.2")
        run("train", "--promote", "--output", str(home / "train-3.json"))
        show_decision(home / "train-3.json")
    else:
        console.print("no retraining needed")

    console.print(
        Panel.fit(
            f"done in {time.perf_counter() - started:.0f}s.\n"
            f"MLflow UI:      .venv/bin/mlflow ui --backend-store-uri sqlite:///{home / 'mlflow.db'}\n"
            f"drift reports:  {home / 'reports'}\n"
            "keep the API running: make serve    control room: make ui",
            title="what next",
        )
    )


if __name__ == "__main__":
    main()
