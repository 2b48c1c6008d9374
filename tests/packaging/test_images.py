"""The two images, built with podman and run the way the chart runs them (non-root, read-only
root file system, no capabilities): the MLflow image serves a registry on Postgres with
artifacts proxied to S3; the application image trains a model as a job and then serves it
on loopback, answering /predict."""

from __future__ import annotations

import json

import httpx
import pytest
import sqlalchemy as sa

from tests.packaging.chart_support import podman
from tests.support import REPO, free_port, temporary_database, wait_http, wait_until

pytestmark = pytest.mark.slow

# The chart's securityContext, as podman flags.
LOCKED_DOWN = (
    "--read-only",
    "--tmpfs",
    "/tmp:rw,size=512m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


def inspect(image: str) -> dict:
    return json.loads(podman("image", "inspect", image).stdout)[0]


@pytest.mark.parametrize("which", ["app", "mlflow"])
def test_images_are_non_root_pinned_and_free_of_build_tools(images, which):
    image = images[which]
    details = inspect(image)
    config = details["Config"]
    assert config["User"] == "10001:10001"
    assert (details.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test"), "no HEALTHCHECK"
    entry = {"app": ["rakuten-mlops"], "mlflow": ["mlflow"]}[which]
    assert config["Entrypoint"] == entry
    probe = podman(
        "run", "--rm", "--no-healthcheck", "--entrypoint", "sh", image, "-c",
        "id -u; for t in gcc cc g++ make; do command -v $t || true; done; ls /opt/venv/bin/pip* 2>/dev/null || true",
    ).stdout.split()  # fmt: skip
    assert probe[0] == "10001"
    assert probe[1:] == [], f"build tools in the final image: {probe[1:]}"
    size = inspect(image)["Size"]
    print(f"{image}: {size / 1e6:.0f} MB")


def test_app_image_runs_the_cli_locked_down(images):
    proc = podman("run", "--rm", "--no-healthcheck", *LOCKED_DOWN, images["app"], "--help")
    for command in ("serve", "data", "train", "operator"):
        assert command in proc.stdout, proc.stdout


def test_mlflow_image_has_its_server_extras(images):
    proc = podman(
        "run", "--rm", "--no-healthcheck", "--entrypoint", "python3", images["mlflow"], "-c",
        "import mlflow, psycopg2, boto3; print(mlflow.__version__)",
    )  # fmt: skip
    pinned = (REPO / "images" / "mlflow" / "requirements.txt").read_text()
    assert f"mlflow=={proc.stdout.strip()}" in pinned


# ------------------------------------------------------------------ end to end on loopback


@pytest.fixture
def mlflow_db(pg_server):
    """The MLflow container's backend store: a throwaway database beside the test's data database."""
    with temporary_database(pg_server, "rk_mlflow") as url:
        yield url


@pytest.fixture
def s3(s3_server):
    """The session's S3 server (SeaweedFS) with a bucket of this test, like MinIO in the chart."""
    client = s3_server.client()
    if "mlflow" not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket="mlflow")
    return {
        "endpoint": s3_server.endpoint,
        "key": s3_server.access_key,
        "secret": s3_server.secret_key,
        "client": client,
    }


def test_trained_model_is_served_by_the_api_container(images, containers, mlflow_db, pg_url, s3):
    """MLflow container (Postgres + S3) <- training job container -> API container answers /predict."""
    try:
        mlflow_port, api_port = free_port(), free_port()
        tracking = f"http://127.0.0.1:{mlflow_port}"
        mlflow = containers.run(
            images["mlflow"],
            "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
            f"--backend-store-uri={mlflow_db}", "--serve-artifacts", "--artifacts-destination=s3://mlflow/artifacts",
            f"--allowed-hosts=127.0.0.1:{mlflow_port},localhost:{mlflow_port}",
            options=(*LOCKED_DOWN, "--no-healthcheck", "-e", "HOME=/tmp", "-e", f"MLFLOW_S3_ENDPOINT_URL={s3['endpoint']}",
                     "-e", f"AWS_ACCESS_KEY_ID={s3['key']}", "-e", f"AWS_SECRET_ACCESS_KEY={s3['secret']}"),
        )  # fmt: skip
        wait_http(f"{tracking}/health", timeout=120, describe=lambda: containers.logs(mlflow))

        job_env = (
            "-e", f"RAKUTEN_DATABASE_URL={pg_url}", "-e", f"MLFLOW_TRACKING_URI={tracking}",
            "-e", "RAKUTEN_HOME=/tmp/rakuten", "-e", "HOME=/tmp", "-e", "MPLCONFIGDIR=/tmp/mpl",
            "-e", "RAKUTEN_MIN_F1=0.0", "-e", "RAKUTEN_MAX_ECE=1.0",
        )  # fmt: skip
        job = podman(
            "run", "--rm", "--no-healthcheck", "--network", "host", *LOCKED_DOWN, *job_env,
            "--entrypoint", "sh", images["app"], "-ec",
            "rakuten-mlops db upgrade; rakuten-mlops data generate --rows 3000 --seed 7 --out /tmp/data;"
            " rakuten-mlops data load --source /tmp/data --all; rakuten-mlops train --promote --output /tmp/d.json;"
            " python3 -c 'import json; print(json.dumps(json.load(open(\"/tmp/d.json\"))))'",
            timeout=600,
        )  # fmt: skip
        decision = json.loads(job.stdout.strip().splitlines()[-1])
        assert decision["decision"] == "promoted", job.stdout[-2000:]
        stored = s3["client"].list_objects_v2(Bucket="mlflow", Prefix="artifacts/")
        assert stored.get("KeyCount", 0) > 0, "the model's artifacts did not reach the object store"

        api = containers.run(
            images["app"], "serve", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1",
            options=(*LOCKED_DOWN, *job_env[:-2], "-e", f"HEALTHCHECK_PORT={api_port}"),
        )  # fmt: skip
        base = f"http://127.0.0.1:{api_port}"
        wait_http(f"{base}/ready", timeout=180, describe=lambda: containers.logs(api))
        rsp = httpx.post(
            f"{base}/predict",
            json={
                "designation": "Manette sans fil Nintendo Switch Pro noire",
                "description": "Batterie rechargeable",
            },
            timeout=30,
        )
        assert rsp.status_code == 200, rsp.text
        body = rsp.json()
        assert isinstance(body["prdtypecode"], int) and 0 <= body["confidence"] <= 1
        assert body["model_version"] == decision["version"]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert "rakuten_model_loaded 1.0" in metrics
        assert "rakuten_predictions_total{" in metrics
        health = podman("healthcheck", "run", api, check=False)
        assert health.returncode == 0, f"HEALTHCHECK failed: {health.stdout}{health.stderr}"

        # live traffic reaches the prediction log, and the drift job (Evidently) reads it back
        items = [
            {"designation": f"Manette sans fil modèle {i}", "description": "Batterie"} for i in range(250)
        ]
        batch = httpx.post(f"{base}/predict/batch", json={"items": items}, timeout=60)
        assert batch.status_code == 200, batch.text
        engine = sa.create_engine(pg_url)

        def logged() -> bool:
            with engine.connect() as conn:
                return conn.execute(sa.text("select count(*) from predictions")).scalar_one() >= len(items)

        wait_until(logged, timeout=30, what="the prediction log to hold the batch")
        engine.dispose()
        drift = podman(
            "run", "--rm", "--no-healthcheck", "--network", "host", *LOCKED_DOWN, *job_env,
            images["app"], "drift", "--json", timeout=300,
        )  # fmt: skip
        report = json.loads(drift.stdout[drift.stdout.index("{") :])
        assert report["model_version"] == decision["version"], report
        assert report["n_current"] >= 250 and report["status"] not in (
            "not_enough_data",
            "not_enough_reference",
        ), report
        assert report["tests"] and report["severity"] in ("none", "low", "medium", "high")
    finally:
        containers.cleanup()
