"""`lookup` keeps generated secrets on upgrade: helm renders against a minimal API server on
loopback (discovery + the Secrets of a previous install) with --dry-run=server, the way it
reads a real cluster during `helm upgrade`."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.packaging.chart_support import CHART, NAMESPACE, RELEASE, by_kind
from tests.support import StandInHttpServer

# every kind the default chart renders, so that helm can map each object to a resource
KINDS = [
    ("", "v1", "Secret", "secrets"), ("", "v1", "Service", "services"), ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "ServiceAccount", "serviceaccounts"), ("", "v1", "Pod", "pods"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("apps", "v1", "Deployment", "deployments"), ("apps", "v1", "StatefulSet", "statefulsets"),
    ("batch", "v1", "Job", "jobs"), ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles"), ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    ("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"),
    ("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"),
]  # fmt: skip


def discovery_routes() -> dict[str, dict]:
    routes: dict[str, dict] = {
        "/version": {"major": "1", "minor": "31", "gitVersion": "v1.31.0"},
        "/api": {"kind": "APIVersions", "versions": ["v1"]},
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    }
    for group, version, kind, plural in KINDS:
        gv = f"{group}/{version}" if group else version
        listing = routes.setdefault(
            f"/apis/{gv}" if group else "/api/v1",
            {"kind": "APIResourceList", "groupVersion": gv, "resources": []},
        )
        listing["resources"].append(
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": True,
                "kind": kind,
                "verbs": ["get", "list"],
            }
        )
        if group and all(g["name"] != group for g in routes["/apis"]["groups"]):
            entry = {"groupVersion": gv, "version": version}
            routes["/apis"]["groups"].append({"name": group, "versions": [entry], "preferredVersion": entry})
    return routes


class FakeApiServer:
    """Read-only API server: discovery plus the Secrets it is given (owned by the release)."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        routes = discovery_routes()
        for name, data in secrets.items():
            routes[f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}"] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "labels": {"app.kubernetes.io/managed-by": "Helm"},
                    "annotations": {
                        "meta.helm.sh/release-name": RELEASE,
                        "meta.helm.sh/release-namespace": NAMESPACE,
                    },
                },
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
        self.routes = routes
        self.http = StandInHttpServer(self._answer)

    def _answer(self, request: dict) -> tuple[int, dict]:
        body = self.routes.get(request["path"].split("?")[0])
        if body:
            return 200, body
        return 404, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "NotFound",
            "code": 404,
        }

    @property
    def requests(self) -> list[str]:
        """The paths helm asked for."""
        return [r["path"].split("?")[0] for r in self.http.requests]

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.http.url}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [
                        {"name": "c", "context": {"cluster": "fake", "user": "u", "namespace": NAMESPACE}}
                    ],
                    "current-context": "c",
                }
            )
        )
        return path


@pytest.fixture
def fake_cluster(request) -> Iterator[FakeApiServer]:
    server = FakeApiServer(request.param)
    with server.http:
        yield server


def render_against(helm: str, server: FakeApiServer, tmp_path: Path) -> dict[str, dict[str, str]]:
    proc = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=server", "--disable-openapi-validation",
         "--kube-version", "1.31"],
        capture_output=True, text=True, timeout=120, env={"KUBECONFIG": str(server.kubeconfig(tmp_path / "kubeconfig")), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in by_kind(docs, "Secret")
    }


PG, MINIO, ADMIN, LANDING = (
    f"{RELEASE}-rakuten-mlops-{c}" for c in ("postgres", "minio", "admin", "landing")
)
PREVIOUS = {
    PG: {"password": "previous-pg-password-0123456789ab"},
    MINIO: {"root-user": "previoususer0123", "root-password": "previous-minio-password-0123456789abcdef"},
    ADMIN: {"token": "previous-admin-token-0123456789abcdefghijklmnopq"},
    LANDING: {
        "access-key-id": "previouslanding0123",
        "secret-access-key": "previous-landing-secret-0123456789abcdefg",
    },
}


@pytest.mark.parametrize("fake_cluster", [PREVIOUS], indirect=True, ids=["upgrade"])
def test_upgrade_keeps_every_generated_secret(helm, fake_cluster, tmp_path):
    secrets = render_against(helm, fake_cluster, tmp_path)
    assert secrets[PG]["password"] == PREVIOUS[PG]["password"]
    assert f":{PREVIOUS[PG]['password']}@" in secrets[PG]["database-url"]
    assert f":{PREVIOUS[PG]['password']}@" in secrets[PG]["mlflow-database-url"]
    assert secrets[MINIO] == PREVIOUS[MINIO]
    assert secrets[ADMIN] == PREVIOUS[ADMIN]
    assert secrets[LANDING] == PREVIOUS[LANDING], "the MinIO landing user keeps its keys"
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{PG}" in fake_cluster.requests, (
        "helm did not look the Secret up"
    )


@pytest.mark.parametrize("fake_cluster", [{}], indirect=True, ids=["first-install"])
def test_first_install_generates_new_secrets(helm, fake_cluster, tmp_path):
    secrets = render_against(helm, fake_cluster, tmp_path)
    assert secrets[PG]["password"] not in {v["password"] for v in PREVIOUS.values() if "password" in v}
    assert len(secrets[PG]["password"]) == 32 and len(secrets[ADMIN]["token"]) == 48
