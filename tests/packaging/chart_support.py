"""Helpers of the packaging checks (paths, rendering, validation, podman); fixtures are in conftest.py."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import REPO, SHARED

SCHEMAS = SHARED / "schemas"
CHART = REPO / "charts" / "rakuten-mlops"
SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE = "rk"
NAMESPACE = "rakuten"
IN_CI = bool(os.environ.get("CI"))


def tool_or_skip(name: str, hint: str) -> str:
    """Path of a CLI tool; skip when it is missing, fail when CI is set (CI installs it)."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({hint})"
    if IN_CI:
        pytest.fail(f"CI is set but {message}")
    pytest.skip(message)


class Renderer:
    """`helm template` with caching: rendering is the slow part of the chart checks."""

    def __init__(self, helm: str) -> None:
        self.helm = helm

    @functools.cache  # noqa: B019 - one instance per session
    def text(
        self,
        scenario: str = "default",
        kube_version: str = "1.31",
        sets: tuple[str, ...] = (),
        namespace: str = NAMESPACE,
        release: str = RELEASE,
        chart: Path = CHART,
    ) -> str:
        cmd = [self.helm, "template", release, str(chart), "--namespace", namespace]
        cmd += ["--kube-version", kube_version, "-f", str(CHART / "ci" / f"{scenario}-values.yaml")]
        cmd += ["--include-crds"]
        for item in sets:
            cmd += ["--set", item]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"helm template failed for {scenario}: {proc.stderr}")
        return proc.stdout

    def docs(self, *args, **kwargs) -> list[dict]:
        return [d for d in yaml.safe_load_all(self.text(*args, **kwargs)) if d]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.helm, *args], capture_output=True, text=True, timeout=120)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"expected one {kind} {name}, found {[d['metadata']['name'] for d in by_kind(docs, kind)]}"
    )
    return found[0]


def pod_specs(docs: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    """(object name, pod metadata, pod spec) of every workload the chart renders."""
    for doc in docs:
        kind = doc["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            tpl = doc["spec"]["template"]
            yield f"{kind}/{doc['metadata']['name']}", tpl.get("metadata", {}), tpl["spec"]
        elif kind == "Pod":
            yield f"Pod/{doc['metadata']['name']}", doc["metadata"], doc["spec"]


@functools.cache
def crd_validator(path: Path):
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(path.read_text()))


@functools.cache
def chart_crd_validators() -> dict[tuple[str, str], object]:
    """(apiVersion, kind) -> validator from the chart's own CRDs (crds/*.yaml)."""
    import jsonschema

    out = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in filter(None, yaml.safe_load_all(path.read_text())):
            for version in crd["spec"]["versions"]:
                api_version = f"{crd['spec']['group']}/{version['name']}"
                schema = version["schema"]["openAPIV3Schema"]
                out[(api_version, crd["spec"]["names"]["kind"])] = jsonschema.Draft202012Validator(schema)
    return out


def validate_object(doc: dict, kube_version: str) -> None:
    """Strictly validate one rendered object; raises jsonschema.ValidationError (or a
    SchemaNotFoundError for a kind nobody can check, which the tests treat as a failure)."""
    import kubernetes_validate

    group, _, version = doc["apiVersion"].rpartition("/")
    schema_path = SCHEMAS / group / f"{doc['kind'].lower()}_{version}.json"
    if group and schema_path.is_file():
        crd_validator(schema_path).validate(doc)
        return
    own = chart_crd_validators().get((doc["apiVersion"], doc["kind"]))
    if own is not None:
        own.validate(doc)
        return
    kubernetes_validate.validate(doc, kube_version, strict=True)


# ---------------------------------------------------------------- podman images

CONTAINERS_CONF = REPO / "images" / "containers.conf"
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
APP_IMAGE = "localhost/rakuten-mlops:test"
MLFLOW_IMAGE = "localhost/rakuten-mlops-mlflow:test"


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env()
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc


def build_image(tag: str, dockerfile: Path, context: Path) -> None:
    podman(
        "build", "--pull=never", "--network", "host", "--format", "docker", "--layers",
        "-t", tag, "-f", str(dockerfile), str(context),
        timeout=1500,
    )  # fmt: skip


class Containers:
    """Containers started by one test, removed afterwards."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def run(self, image: str, *args: str, options: tuple[str, ...] = ()) -> str:
        cid = podman("run", "-d", "--network", "host", *options, image, *args).stdout.strip()
        self.ids.append(cid)
        return cid

    def logs(self, cid: str) -> str:
        proc = podman("logs", cid, check=False)
        return (proc.stdout + proc.stderr)[-4000:]

    def cleanup(self) -> None:
        for cid in self.ids:
            podman("rm", "-f", "-t", "2", cid, check=False, timeout=60)
