"""The operator's Kubernetes manifests: strict schema validation, contract names, least privilege."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
K8S_VERSION = "1.31"


def docs(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((OPERATOR_DIR / name).read_text()) if doc]


def crd() -> dict[str, Any]:
    return next(doc for doc in docs("crd.yaml") if doc["kind"] == "CustomResourceDefinition")


def served_model_schema() -> dict[str, Any]:
    """The CRD's OpenAPI schema as JSON Schema (Kubernetes extensions dropped)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    version = crd()["spec"]["versions"][0]
    return strip(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("crd.yaml", "CustomResourceDefinition"),
        ("peering.yaml", "CustomResourceDefinition"),
        ("rbac.yaml", "ServiceAccount"),
        ("rbac.yaml", "Role"),
        ("rbac.yaml", "RoleBinding"),
    ],
)
def test_manifest_validates_in_strict_mode(name, kind):
    (doc,) = [d for d in docs(name) if d["kind"] == kind]
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_typo():
    """The check above has teeth: an unknown field in the CRD is an error."""
    doc = copy.deepcopy(crd())
    doc["spec"]["scopes"] = "Namespaced"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_crd_follows_the_contract():
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "servedmodels.mlops.rakuten.io"
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == (
        "mlops.rakuten.io",
        "Namespaced",
        "ServedModel",
    )
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Desired"] == ".status.desiredVersion"
    assert columns["Served"] == ".status.servedVersion"
    assert columns["Phase"] == ".status.phase"
    props = version["schema"]["openAPIV3Schema"]["properties"]
    defaults = {k: v.get("default") for k, v in props["spec"]["properties"].items()}
    assert defaults["registeredModel"] == "rakuten_classifier"
    assert defaults["alias"] == "production"
    assert defaults["pollSeconds"] == 30
    assert defaults["autoRollback"] is True
    assert props["spec"]["required"] == ["deployment"]
    assert props["status"]["properties"]["phase"]["enum"] == [
        "Idle",
        "RollingOut",
        "Shadow",
        "Canary",
        "Ready",
        "Failed",
        "RolledBack",
    ]
    from rakuten_operator.rollout import Phase

    assert set(props["status"]["properties"]["phase"]["enum"]) == {str(p) for p in Phase}
    for column in ("Step", "Stable", "Candidate", "Verdict"):
        assert column in columns
    assert (
        "strategy" in props["spec"]["properties"] and "default" not in props["spec"]["properties"]["strategy"]
    )


def test_a_servedmodel_and_the_operators_status_fit_the_schema():
    from rakuten_operator.rollout import Phase, transition

    schema = served_model_schema()
    import datetime as dt

    status = transition(
        {},
        Phase.ROLLING_OUT,
        now=dt.datetime.now(dt.UTC),
        reason="RolloutStarted",
        message="version 2 pinned",
        desired="2",
        previous="1",
        rollout_started=True,
    )
    body = {
        "apiVersion": "mlops.rakuten.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": "classifier"},
        "spec": {"deployment": "rk-rakuten-mlops-api", "pollSeconds": 10, "rolloutTimeoutSeconds": 300},
        **status.patch,
    }
    jsonschema.validate(body, schema)
    body["spec"]["pollSeconds"] = 0
    with pytest.raises(jsonschema.ValidationError, match="minimum"):
        jsonschema.validate(body, schema)
    del body["spec"]["deployment"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)


def test_rbac_is_namespaced_and_least_privilege():
    kinds = [doc["kind"] for doc in docs("rbac.yaml")]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    (role,) = [d for d in docs("rbac.yaml") if d["kind"] == "Role"]
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        if rule.get("resourceNames"):
            continue
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                grants.setdefault((g, r), set()).update(rule["verbs"])
    assert all("*" not in verbs for verbs in grants.values())
    # the canary of a progressive rollout: any Deployment may be created, only the canary deleted
    assert grants[("apps", "deployments")] == {"get", "patch", "create"}
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["rk-rakuten-mlops-api-canary"],
            "verbs": ["delete"],
        }
    ]
    assert grants[("mlops.rakuten.io", "servedmodels")] == {"get", "list", "watch", "patch"}
    assert grants[("mlops.rakuten.io", "servedmodels/status")] == {"get", "patch"}
    assert grants[("", "events")] == {"create"}
    assert grants[("kopf.dev", "kopfpeerings")] == {"get", "list", "watch", "patch"}
    assert not any("secrets" in r or "pods" in r for _, r in grants)
    (binding,) = [d for d in docs("rbac.yaml") if d["kind"] == "RoleBinding"]
    (account,) = [d for d in docs("rbac.yaml") if d["kind"] == "ServiceAccount"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]


def test_operator_package_never_shadows_the_stdlib_operator_module():
    assert not (OPERATOR_DIR / "__init__.py").exists()
    assert not (OPERATOR_DIR / "operator.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import operator, rakuten_operator.handlers; print(operator.__file__)"],
        cwd=OPERATOR_DIR.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "rakuten" not in out and out.strip().endswith("operator.py")


def test_cli_exposes_operator_run():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "rakuten-mlops"), "operator", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--namespace", "--liveness", "--peering", "--priority", "--standalone"):
        assert option in out
