"""What can be checked here of the dev loop (k8s/, kind-config.yaml, skaffold.yaml, Makefile,
scripts): pins, port mappings that line up, patches that apply to the upstream objects' shape,
and a skaffold deploy that renders with the chart."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.packaging.chart_support import CHART, by_kind, tool_or_skip, validate_object
from tests.support import REPO

KIND = yaml.safe_load((REPO / "kind-config.yaml").read_text())
MAPPED = {m["containerPort"]: m["hostPort"] for n in KIND["nodes"] for m in n.get("extraPortMappings", [])}


def load(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


def test_kind_cluster_has_one_control_plane_two_workers_and_pinned_nodes():
    assert KIND["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in KIND["nodes"]] == ["control-plane", "worker", "worker"]
    for node in KIND["nodes"]:
        assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", node["image"]), node["image"]
    assert sorted(MAPPED.values()) == [2746, 3000, 5050, 8000, 8501]
    assert 5000 not in MAPPED.values(), "macOS's AirPlay receiver holds host port 5000"
    for mapping in KIND["nodes"][0]["extraPortMappings"]:
        assert mapping.get("listenAddress") == "127.0.0.1", "expose the cluster on loopback only"


def test_namespace_manifest_is_valid():
    doc = load("k8s/namespace.yaml")
    validate_object(doc, "1.31")
    assert doc["metadata"]["name"] == "rakuten"


def test_argo_is_pinned_to_v4_1_2_with_ui_on_the_mapped_port():
    kust = load("k8s/argo/kustomization.yaml")
    urls = [r for r in kust["resources"] if r.startswith("https://")]
    assert urls == ["https://github.com/argoproj/argo-workflows/releases/download/v4.1.2/install.yaml"]
    patches = {p["target"]["kind"]: yaml.safe_load(p["patch"]) for p in kust["patches"]}
    assert {
        "op": "add",
        "path": "/spec/template/spec/containers/0/args/-",
        "value": "--auth-mode=server",
    } in patches["Deployment"]
    node_port = next(op["value"] for op in patches["Service"] if op["path"] == "/spec/ports/0/nodePort")
    assert MAPPED[node_port] == 2746
    validate_object(load("k8s/argo/namespace.yaml"), "1.31")


def test_metrics_server_is_pinned_and_trusts_kind_kubelets():
    kust = load("k8s/metrics-server/kustomization.yaml")
    assert kust["resources"] == [
        "https://github.com/kubernetes-sigs/metrics-server/releases/download/v0.9.0/components.yaml"
    ]
    ops = yaml.safe_load(kust["patches"][0]["patch"])
    assert ops[0]["value"] == "--kubelet-insecure-tls"


def test_kube_prometheus_stack_values_find_our_objects_and_dashboard(render):
    values = load("k8s/kube-prometheus-stack-values.yaml")
    spec = values["prometheus"]["prometheusSpec"]
    for key in (
        "serviceMonitorSelectorNilUsesHelmValues",
        "podMonitorSelectorNilUsesHelmValues",
        "ruleSelectorNilUsesHelmValues",
    ):
        assert spec[key] is False, key
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    dashboard = next(
        c for c in by_kind(render.docs(), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    )
    assert dashboard["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["searchNamespace"] == "ALL"
    assert sidecar["folderAnnotation"] in dashboard["metadata"]["annotations"]
    assert MAPPED[values["grafana"]["service"]["nodePort"]] == 3000
    assert "adminPassword" not in values["grafana"], "no default Grafana password"


def test_makefile_targets_and_pins():
    text = (REPO / "Makefile").read_text()
    for target in ("kind-up", "images", "deploy", "kind-e2e", "kind-down", "helm-check", "images-podman"):
        assert re.search(rf"^{target}:", text, re.MULTILINE), target
    assert "KPS_VERSION ?= 88.5.3" in text
    assert "kubectl apply --server-side -k k8s/argo" in text
    assert "kind load docker-image" not in text, "fails with Docker's containerd image store"
    assert "scripts/kind-images.sh" in text and "--set image.tag=$$APP_TAG" in text
    assert "--wait" in text.split("\ndeploy:", 1)[1].split("\n\n", 1)[0], (
        "deploy finishes on an empty registry"
    )
    load = (REPO / "scripts" / "kind-load.sh").read_text()
    assert "docker save" in load and "kind load image-archive" in load
    phony = text.split(".PHONY:", 1)[1].split("\n\n", 1)[0]
    for target in ("kind-up", "images", "deploy", "kind-e2e", "kind-down", "helm-check", "images-podman"):
        assert target in phony.split(), target


SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_pass_shellcheck(script):
    path = REPO / "scripts" / script
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "set -euo pipefail" in path.read_text()
    shellcheck = tool_or_skip("shellcheck", "apt-get install shellcheck; .ci/setup.d/30-packaging.sh")
    proc = subprocess.run([shellcheck, "-x", str(path)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_skaffold_builds_both_images_and_deploys_the_chart_with_kind_values(render):
    cfg = load("skaffold.yaml")
    assert cfg["apiVersion"] == "skaffold/v4beta14"
    assert cfg["build"]["local"]["push"] is False
    artifacts = {a["image"]: a for a in cfg["build"]["artifacts"]}
    assert set(artifacts) == {"rakuten-mlops", "rakuten-mlops-mlflow"}
    for art in artifacts.values():
        assert (REPO / art["context"] / art["docker"]["dockerfile"]).is_file()
    release = cfg["deploy"]["helm"]["releases"][0]
    assert (REPO / release["chartPath"]).resolve() == CHART.resolve()
    for values_file in release["valuesFiles"]:
        assert (REPO / values_file).is_file()
    # what skaffold would pass: its templates filled with an image repo and tag
    filled = {
        key: re.sub(
            r"\{\{\.IMAGE_REPO_\w+\}\}",
            "kind.local/rakuten-mlops",
            re.sub(r"\{\{\.IMAGE_TAG_\w+\}\}", "abc123", value),
        )
        for key, value in release["setValueTemplates"].items()
    }
    sets = tuple(f"{k}={v}" for k, v in filled.items())
    docs = render.docs("kind", "1.31", sets, release=release["name"], namespace=release["namespace"])
    api = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "rakuten-rakuten-mlops-api")
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == "kind.local/rakuten-mlops:abc123"
    services = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    for forward in cfg["portForward"]:
        assert forward["resourceName"] in services
        assert forward["localPort"] not in MAPPED.values(), "kind's extraPortMappings hold that host port"
        assert forward["localPort"] != 5000
    assert cfg["build"]["tagPolicy"] == {"inputDigest": {}}, "an edit must change the tag"
    for art in artifacts.values():
        assert art["hooks"]["after"] == [{"command": ["bash", "scripts/kind-load.sh"]}]


def test_skaffold_config_follows_skaffold_v4beta14_schema():
    """schemas/skaffold-v4beta14.json is skaffold's published schema for v4beta14
    (GoogleContainerTools/skaffold docs-v2/content/en/schemas/v4beta14.json at commit
    8a894ee94417b75149f552eba0822f55878f48a6), descriptions removed."""
    schema = json.loads((Path(__file__).parent / "schemas" / "skaffold-v4beta14.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    cfg = load("skaffold.yaml")
    assert [e.message for e in validator.iter_errors(cfg)] == []
    cfg["deploy"]["statusCheckDeadlineSecond"] = 600
    assert list(validator.iter_errors(cfg)), "the schema must refuse a misspelt key"


def test_dockerignore_keeps_the_build_context_small():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for entry in (".venv", ".rakuten", ".git", "tests", "test-artifacts"):
        assert entry in ignored, entry
    for needed in ("src", "operator", "pyproject.toml", "README.md"):
        assert needed not in ignored


DOCKER_STAND_IN = """#!/bin/sh
# stand-in docker: records the call; the image ID is a hash of BUILD_INPUTS and the image name
echo "docker $*" >> "$CALLS"
case "$1 $2" in
  "image inspect") printf 'sha256:%s\\n' "$(printf '%s %s' "$BUILD_INPUTS" "$5" | sha256sum | cut -c1-64)" ;;
  "save -o") : > "$3" ;;
esac
"""


def test_make_images_tags_by_content_and_loads_an_archive_into_kind(tmp_path):
    """scripts/kind-images.sh with stand-in `docker` and `kind` (no Docker engine here): the tag
    follows the image's content, and images reach kind through `docker save` + `kind load
    image-archive`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER_STAND_IN)
    (bin_dir / "kind").write_text('#!/bin/sh\necho "kind $*" >> "$CALLS"\n')
    for tool in ("docker", "kind"):
        (bin_dir / tool).chmod(0o755)

    def build(inputs: str) -> tuple[str, list[str]]:
        calls, out = tmp_path / f"calls-{inputs}", tmp_path / f"tags-{inputs}.env"
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CALLS": str(calls),
            "BUILD_INPUTS": inputs,
        }
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "kind-images.sh"), str(out)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        return out.read_text(), calls.read_text().splitlines()

    first, calls = build("v1")
    assert re.fullmatch(r"APP_TAG=sha-[0-9a-f]{12}\nMLFLOW_TAG=sha-[0-9a-f]{12}\n", first)
    app_tag = first.split("\n")[0].split("=")[1]
    assert f"docker tag rakuten-mlops:build rakuten-mlops:{app_tag}" in calls
    save = next(c for c in calls if c.startswith("docker save -o "))
    assert f"rakuten-mlops:{app_tag}" in save
    archive = save.split()[3]
    assert f"kind load image-archive --name rakuten {archive}" in calls
    assert not [c for c in calls if "load docker-image" in c]
    assert build("v1")[0] == first, "an unchanged build keeps its tags: nothing rolls"
    assert build("v2")[0] != first, "a changed build gets new tags: the pods roll"
