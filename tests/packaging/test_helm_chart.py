"""The Helm chart: lint, render every scenario, validate every object strictly, and check the
promises a user relies on (names, security, secrets, probes, network reachability, switches)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.packaging.chart_support import (
    CHART,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    by_kind,
    one,
    pod_specs,
    validate_object,
)
from tests.support import REPO

API = f"{RELEASE}-rakuten-mlops-api"
PG = f"{RELEASE}-rakuten-mlops-postgres"
MINIO = f"{RELEASE}-rakuten-mlops-minio"
MLFLOW = f"{RELEASE}-rakuten-mlops-mlflow"
ADMIN = f"{RELEASE}-rakuten-mlops-admin"
LANDING = f"{RELEASE}-rakuten-mlops-landing"
OPERATOR = f"{RELEASE}-rakuten-mlops-operator"
UI = f"{RELEASE}-rakuten-mlops-ui"
EVERYTHING = ("workflows.enabled=true", "operator.enabled=true", "ui.enabled=true")


def test_scenarios_exist():
    assert {"default", "kind", "external-services", "minimal"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(render, scenario):
    proc = render.run("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / f"{scenario}-values.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_is_valid(render, kube_versions, scenario):
    """Strict schema validation of each object, for Kubernetes 1.31 and the newest known."""
    for version in kube_versions:
        docs = render.docs(scenario, version)
        assert len(docs) >= 10
        errors = []
        for doc in docs:
            try:
                validate_object(doc, version)
            except Exception as exc:  # collect all, report together
                errors.append(
                    f"{doc['kind']}/{doc['metadata'].get('name')}: {exc.__class__.__name__}: {exc}"[:600]
                )
        assert not errors, f"k8s {version}, scenario {scenario}:\n" + "\n".join(errors)


def test_everything_on_renders_valid_objects_of_every_kind(render, kube_versions):
    docs = render.docs("default", kube_versions[-1], EVERYTHING)
    kinds = {d["kind"] for d in docs}
    assert {"WorkflowTemplate", "CronWorkflow", "ServedModel", "CustomResourceDefinition"} <= kinds
    for doc in docs:
        validate_object(doc, kube_versions[-1])


def test_validation_catches_a_typo():
    """The validators are strict: a misspelt field is an error, not ignored."""
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replica": 2}}
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad, "1.31")


# ------------------------------------------------------------------ contract names


def test_names_follow_the_architecture_contract(render):
    docs = render.docs()
    deploy = one(docs, "Deployment", API)
    assert [c["name"] for c in deploy["spec"]["template"]["spec"]["containers"]] == ["api"]
    assert one(docs, "Service", API)["spec"]["ports"][0]["port"] == 8000
    assert one(docs, "Service", MLFLOW)["spec"]["ports"][0]["port"] == 5000
    keys = {name: set(one(docs, "Secret", name)["data"]) for name in (PG, MINIO, ADMIN)}
    assert {"username", "password", "database-url"} <= keys[PG]
    assert keys[MINIO] == {"root-user", "root-password"}
    assert keys[ADMIN] == {"token"}


def container(docs, kind, name, cname=None) -> dict:
    spec = one(docs, kind, name)["spec"]["template"]["spec"]
    return (
        spec["containers"][0] if cname is None else next(c for c in spec["containers"] if c["name"] == cname)
    )


def env_of(c: dict) -> dict[str, dict]:
    names = [e["name"] for e in c.get("env", [])]
    assert len(names) == len(set(names)), f"duplicate env in {c['name']}: {names}"
    return {e["name"]: e for e in c.get("env", [])}


def test_api_rollout_probes_scaling_and_disruption_budget(render):
    docs = render.docs()
    deploy = one(docs, "Deployment", API)
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    api = container(docs, "Deployment", API)
    assert api["args"][:1] == ["serve"] and "--workers" in api["args"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "replicas" not in deploy["spec"], "with an HPA the Deployment must not pin replicas"
    hpa = one(docs, "HorizontalPodAutoscaler", API)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": API}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = one(docs, "PodDisruptionBudget", API)
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    svc = one(docs, "Service", API)
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_api_reads_its_backends_from_secrets_and_the_mlflow_service(render):
    env = env_of(container(render.docs(), "Deployment", API))
    assert env["RAKUTEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": PG, "key": "database-url"}
    assert env["MLFLOW_TRACKING_URI"]["value"] == f"http://{MLFLOW}:5000"
    assert env["RAKUTEN_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": ADMIN, "key": "token"}


def test_mlflow_uses_postgres_proxies_minio_and_accepts_its_service_names(render):
    docs = render.docs()
    mlflow = container(docs, "Deployment", MLFLOW)
    args = mlflow["args"]
    assert "--serve-artifacts" in args
    assert "--artifacts-destination=s3://mlflow/artifacts" in args
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    for host in (MLFLOW, f"{MLFLOW}:*", f"{MLFLOW}.{NAMESPACE}.svc.cluster.local:*", "localhost:*"):
        assert host in allowed
    env = env_of(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == PG
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == f"http://{MINIO}:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": MINIO,
        "key": "root-password",
    }
    job = one(docs, "Job", f"{MINIO}-bucket")
    assert "mb --ignore-existing" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_stateful_services_keep_data_on_persistent_volumes(render):
    docs = render.docs()
    for name, mount in ((PG, "/var/lib/postgresql/data"), (MINIO, "/data")):
        sts = one(docs, "StatefulSet", name)
        claim = sts["spec"]["volumeClaimTemplates"][0]
        assert claim["spec"]["resources"]["requests"]["storage"]
        mounts = {
            m["name"]: m["mountPath"]
            for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        }
        assert mounts[claim["metadata"]["name"]] == mount
    pg = container(docs, "StatefulSet", PG)
    assert pg["image"] == "docker.io/library/postgres:17-alpine"


# ------------------------------------------------------------------ security policy


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_is_locked_down_and_sized(render, scenario):
    sets = EVERYTHING if scenario == "default" else ()
    problems = []
    for where, _meta, spec in pod_specs(render.docs(scenario, "1.31", sets)):
        pod_sc = spec.get("securityContext", {})
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            name = f"{where}:{c['name']}"
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append(f"{name} may run as root")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name} has a writable root file system")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name} allows privilege escalation")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{name} keeps Linux capabilities")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{name} lacks {part} for cpu and memory")
            image = c["image"]
            tag = image.rsplit("@", 1)[0].rsplit(":", 1)
            if "@sha256:" not in image and (len(tag) != 2 or "/" in tag[1] or tag[1] == "latest"):
                problems.append(f"{name} image {image} is not pinned")
            if c.get("ports") and not (c.get("readinessProbe") or c.get("livenessProbe")):
                problems.append(f"{name} serves a port without probes")
            names = [e["name"] for e in c.get("env", [])]
            if len(names) != len(set(names)):
                problems.append(f"{name} sets an env variable twice")
            if c.get("ports") and c["name"] != "operator" and not c.get("readinessProbe"):
                problems.append(f"{name} serves traffic without a readiness probe")
    assert not problems, "\n".join(problems)


def test_service_accounts_do_not_mount_tokens_they_do_not_need(render):
    docs = render.docs("default", "1.31", EVERYTHING)
    # the operator manages Deployments; the UI reads ServedModel status (both need the operator on)
    needs_api = {f"{RELEASE}-rakuten-mlops-operator", f"{RELEASE}-rakuten-mlops-ui"}
    for where, _meta, spec in pod_specs(docs):
        name = where.split("/", 1)[1]
        if name in needs_api:
            continue
        assert spec.get("automountServiceAccountToken") is False, f"{where} mounts a token it never uses"


def test_rbac_is_namespaced_and_minimal(render):
    docs = render.docs("default", "1.31", EVERYTHING)
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    for role in by_kind(docs, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
            assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            # delete only by name: the operator's canary Deployment
            assert "delete" not in rule["verbs"] or rule.get("resourceNames"), role["metadata"]["name"]
    operator_rules = one(docs, "Role", f"{RELEASE}-rakuten-mlops-operator")["rules"]
    reference = [
        d
        for d in yaml.safe_load_all((REPO / "operator" / "rbac.yaml").read_text())
        if d and d["kind"] == "Role"
    ]
    allowed = {
        (g, r, v)
        for rule in reference[0]["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    granted = {
        (g, r, v)
        for rule in operator_rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert granted <= allowed, (
        f"the chart grants the operator more than operator/rbac.yaml: {granted - allowed}"
    )
    ui_rules = one(docs, "Role", f"{RELEASE}-rakuten-mlops-ui")["rules"]
    assert ui_rules == [
        {"apiGroups": ["mlops.rakuten.io"], "resources": ["servedmodels"], "verbs": ["get", "list"]}
    ]
    workflow_rules = one(docs, "Role", f"{RELEASE}-rakuten-mlops-workflow")["rules"]
    assert workflow_rules == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
    ]


# ------------------------------------------------------------------ secrets


def secret_values(docs) -> dict[tuple[str, str], str]:
    return {
        (s["metadata"]["name"], k): base64.b64decode(v).decode()
        for s in by_kind(docs, "Secret")
        for k, v in s.get("data", {}).items()
    }


def test_no_default_passwords_each_install_gets_its_own(render):
    first = secret_values(render.docs())
    second = secret_values(render.docs("default", "1.31", ("commonLabels.render=second",)))
    for key in ((PG, "password"), (MINIO, "root-password"), (ADMIN, "token")):
        assert len(first[key]) >= 32, key
        assert first[key] != second[key], f"{key} is the same on two installs: a default password"
        assert first[key].lower() not in {"changeme", "password", "admin", "minio123", "secret"}
    assert first[(PG, "password")] in first[(PG, "database-url")]
    assert first[(PG, "database-url")].startswith("postgresql+psycopg2://rakuten:")


def test_data_secrets_survive_uninstall_like_their_volumes(render):
    """(Kept on upgrade: test_secrets_kept.py renders against an API server holding them.)"""
    docs = render.docs()
    for name in (PG, MINIO):
        assert one(docs, "Secret", name)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_plaintext_secret_outside_secrets(render, scenario):
    text = render.text(scenario, "1.31", EVERYTHING if scenario == "default" else ())
    docs = [d for d in yaml.safe_load_all(text) if d]
    values = [v for (_, key), v in secret_values(docs).items() if key not in ("username",) and len(v) >= 8]
    others = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    for value in values:
        assert value not in others, "a secret value appears outside a Secret"
    assert not any("stringData" in s for s in by_kind(docs, "Secret"))
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", others), "credentials inside a URL outside a Secret"
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|DATABASE_URL|BACKEND_STORE_URI")
    for where, _meta, spec in pod_specs(docs):
        for c in spec["containers"]:
            for e in c.get("env", []):
                if secretish.search(e["name"]):
                    assert "valueFrom" in e and "secretKeyRef" in e["valueFrom"], (
                        f"{where} {e['name']} is plain"
                    )


def test_existing_secrets_replace_generated_ones(render):
    docs = render.docs(
        "default",
        "1.31",
        (
            "postgres.existingSecret=my-db",
            "minio.existingSecret=my-s3",
            "api.admin.existingSecret=my-admin",
            "api.feedback.existingSecret=my-feedback",
            "workflows.landingZone.existingSecret=my-landing",
        ),
    )
    assert not by_kind(docs, "Secret")
    assert (
        env_of(container(docs, "Deployment", API))["RAKUTEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"][
            "name"
        ]
        == "my-db"
    )
    assert (
        env_of(container(docs, "StatefulSet", MINIO))["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"][
            "name"
        ]
        == "my-s3"
    )
    assert (
        env_of(container(docs, "Deployment", API))["RAKUTEN_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
        == "my-admin"
    )


def test_external_services_scenario_deploys_none_of_them(render):
    docs = render.docs("external-services")
    names = {d["metadata"]["name"] for d in docs}
    assert not {PG, MINIO, MLFLOW} & names
    assert not by_kind(docs, "StatefulSet")
    env = env_of(container(docs, "Deployment", API))
    assert env["RAKUTEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "rakuten-db"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "https://mlflow.internal.example.com"
    assert container(docs, "Deployment", API)["image"] == "ghcr.io/rakuten-mlops/rakuten-mlops:0.1.0"


# ------------------------------------------------------------------ network policies


def _matches(selector: dict, labels: dict) -> bool:
    if "matchLabels" in selector and not selector["matchLabels"].items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        if expr["operator"] == "Exists" and not present:
            return False
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def who_can_reach(docs, target: str) -> set[str]:
    """Names of the workloads (chart pods and Argo workflow pods) allowed in by target's policy."""
    policies = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == target]
    assert len(policies) == 1, target
    pods = {where.split("/", 1)[1]: meta.get("labels", {}) for where, meta, _ in pod_specs(docs)}
    for wf in by_kind(docs, "WorkflowTemplate") + by_kind(docs, "CronWorkflow"):
        spec = wf["spec"].get("workflowSpec", wf["spec"])
        pods[f"workflow:{wf['metadata']['name']}"] = spec.get("podMetadata", {}).get("labels", {})
    allowed = set()
    for rule in policies[0]["spec"]["ingress"]:
        for name, labels in pods.items():
            if any(_matches(peer["podSelector"], labels) for peer in rule.get("from", [])):
                allowed.add(name)
    return allowed


def test_only_what_must_talk_to_postgres_minio_mlflow_can(render):
    docs = render.docs("default", "1.31", EVERYTHING)
    wf = {
        f"workflow:{w['metadata']['name']}"
        for w in by_kind(docs, "WorkflowTemplate") + by_kind(docs, "CronWorkflow")
    }
    assert wf, "workflow objects should be rendered with workflows.enabled"
    op, ui = f"{RELEASE}-rakuten-mlops-operator", f"{RELEASE}-rakuten-mlops-ui"
    assert who_can_reach(docs, PG) == {API, MLFLOW, op, ui} | wf
    assert who_can_reach(docs, MINIO) == {MLFLOW, f"{MINIO}-bucket"} | wf, (
        "workflow pods read the landing zone"
    )
    assert who_can_reach(docs, MLFLOW) == {API, op, ui} | wf
    api_policy = one(docs, "NetworkPolicy", API)
    assert api_policy["spec"]["ingress"] == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]


def test_default_install_keeps_workflow_pods_out(render):
    docs = render.docs()
    assert who_can_reach(docs, PG) == {API, MLFLOW}
    assert who_can_reach(docs, MINIO) == {MLFLOW, f"{MINIO}-bucket"}


# ------------------------------------------------------------------ switches: workflows, operator, ui


def test_workflow_files_are_templated_in_with_release_values(render):
    files = sorted((CHART / "files" / "workflows").glob("*.yaml"))
    docs = render.docs("default", "1.31", ("workflows.enabled=true",), namespace="ml-prod", release="acme")
    argo = [d for d in docs if d["apiVersion"].startswith("argoproj.io/")]
    assert len(argo) == sum(1 for f in files for d in yaml.safe_load_all(f.read_text()) if d)
    text = yaml.safe_dump_all(argo)
    for placeholder in (
        "ghcr.io/rakuten-mlops/app:0.1.0",
        " rakuten-mlops-workflow\n",
        " rakuten-mlops-postgres\n",
        " rakuten-mlops-config\n",
        " rakuten-mlops-source-data\n",
        " rakuten-mlops-landing\n",
    ):
        assert placeholder not in text, placeholder
    for doc in argo:
        assert doc["metadata"]["namespace"] == "ml-prod"
    assert "image: rakuten-mlops:0.1.0" in text
    assert "acme-rakuten-mlops-postgres" in text and "acme-rakuten-mlops-config" in text
    assert "serviceAccountName: acme-rakuten-mlops-workflow" in text
    names = {d["metadata"]["name"] for d in docs}
    assert {"acme-rakuten-mlops-workflow", "acme-rakuten-mlops-config", "acme-rakuten-mlops-landing"} <= names
    assert "acme-rakuten-mlops-source-data" not in names, "the PVC is the option, not the default"


def test_workflows_switch_off_renders_no_argo_objects(render):
    assert not [d for d in render.docs() if d["apiVersion"].startswith("argoproj.io/")]


def test_empty_workflow_folder_is_tolerated(render, tmp_path):
    chart = tmp_path / "rakuten-mlops"
    shutil.copytree(CHART, chart)
    for f in (chart / "files" / "workflows").glob("*.yaml"):
        f.unlink()
    docs = render.docs("default", "1.31", ("workflows.enabled=true",), chart=chart)
    assert not [d for d in docs if d["apiVersion"].startswith("argoproj.io/")]
    assert one(docs, "Role", f"{RELEASE}-rakuten-mlops-workflow")


def test_chart_peering_crd_is_the_operators():
    ours = yaml.safe_load((CHART / "crds" / "kopfpeerings.kopf.dev.yaml").read_text())
    theirs = next(
        d
        for d in yaml.safe_load_all((REPO / "operator" / "peering.yaml").read_text())
        if d and d["kind"] == "CustomResourceDefinition"
    )
    assert ours == theirs


def test_chart_crd_is_the_operators_crd():
    ours = CHART / "crds" / "servedmodels.mlops.rakuten.io.yaml"
    theirs = REPO / "operator" / "crd.yaml"
    assert ours.read_text() == theirs.read_text(), "run: cp operator/crd.yaml " + str(ours.relative_to(REPO))


def test_operator_switch_deploys_operator_and_a_served_model_for_the_api(render):
    assert not by_kind(render.docs(), "ServedModel")
    docs = render.docs("default", "1.31", ("operator.enabled=true",))
    op = container(docs, "Deployment", f"{RELEASE}-rakuten-mlops-operator")
    assert op["args"][:2] == ["operator", "run"]
    assert (
        "--standalone" not in op["args"] and op["args"][op["args"].index("--peering") + 1] == "rakuten-mlops"
    )
    assert one(docs, "KopfPeering", "rakuten-mlops")["metadata"]["namespace"] == NAMESPACE
    rules = one(docs, "Role", f"{RELEASE}-rakuten-mlops-operator")["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    } in rules
    assert op["image"] == container(docs, "Deployment", API)["image"]
    served = by_kind(docs, "ServedModel")[0]
    assert served["spec"]["deployment"] == API and served["spec"]["container"] == "api"
    env = env_of(container(docs, "Deployment", API))
    assert env["RAKUTEN_MODEL_POLL_SECONDS"]["value"] == "0", "the operator, not the API, follows the alias"


def test_ui_is_off_by_default_and_runs_the_control_room(render):
    assert not [d for d in render.docs() if d["metadata"]["name"].endswith("-ui")]
    docs = render.docs("default", "1.31", ("ui.enabled=true",))
    ui = container(docs, "Deployment", f"{RELEASE}-rakuten-mlops-ui")
    assert ui["args"] == ["ui", "--host", "0.0.0.0", "--port", "8501"], "the Service must reach it"
    assert env_of(ui)["RAKUTEN_API_URL"]["value"] == f"http://{API}:8000"


def test_helm_test_pod_posts_to_predict(render):
    pods = [d for d in render.docs() if d["kind"] == "Pod"]
    assert len(pods) == 1 and pods[0]["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pods[0]["spec"]["containers"][0]["args"][0]
    assert f"http://{API}:8000" in script and '"/predict"' in script
    compile(script, "helm-test", "exec")


def test_kind_scenario_maps_node_ports_of_kind_config(render):
    docs = render.docs("kind")
    kind_cfg = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    mapped = {
        m["containerPort"]: m["hostPort"] for n in kind_cfg["nodes"] for m in n.get("extraPortMappings", [])
    }
    assert mapped[one(docs, "Service", API)["spec"]["ports"][0]["nodePort"]] == 8000
    assert mapped[one(docs, "Service", MLFLOW)["spec"]["ports"][0]["nodePort"]] == 5050
    assert mapped[one(docs, "Service", UI)["spec"]["ports"][0]["nodePort"]] == 8501
    assert 5000 not in mapped.values(), "macOS's AirPlay receiver holds host port 5000"
    assert container(docs, "Deployment", API)["imagePullPolicy"] == "Never"


def test_kind_scenario_runs_everything_the_design_names(render):
    """Postgres, MinIO, MLflow; the API with HPA rolled by the operator; the control room on the
    Argo server; the three CronWorkflows and the training template; the monitoring objects."""
    docs = render.docs("kind")
    for kind, name in (
        ("StatefulSet", PG),
        ("StatefulSet", MINIO),
        ("Deployment", MLFLOW),
        ("HorizontalPodAutoscaler", API),
        ("Deployment", OPERATOR),
        ("ServedModel", f"{RELEASE}-rakuten-mlops"),
        ("WorkflowTemplate", "rakuten-train"),
        ("CronWorkflow", "incremental-load"),
        ("CronWorkflow", "rakuten-train-weekly"),
        ("CronWorkflow", "drift-check"),
        ("CronWorkflow", "catalogue-rescore"),
        ("CronWorkflow", "retention"),
        ("ServiceMonitor", API),
        ("PrometheusRule", API),
        ("ConfigMap", f"{RELEASE}-rakuten-mlops-dashboard"),
    ):
        one(docs, kind, name)
    assert one(docs, "ServedModel", f"{RELEASE}-rakuten-mlops")["spec"]["deployment"] == API
    api = env_of(container(docs, "Deployment", API))
    assert api["RAKUTEN_MODEL_POLL_SECONDS"]["value"] == "0", "the operator, not the API, follows the alias"
    assert "RAKUTEN_MODEL_VERSION" not in api, "the operator pins the version, the chart does not"
    ui = env_of(container(docs, "Deployment", UI))
    assert ui["ARGO_SERVER"]["value"] == "https://argo-server.argo.svc:2746"
    assert ui["ARGO_INSECURE_SKIP_VERIFY"]["value"] == "true", (
        "k8s/argo's server has a self-signed certificate"
    )
    assert ui["RAKUTEN_PROMETHEUS_URL"]["value"].startswith("http://kube-prometheus-stack-prometheus.")


# ------------------------------------------------------------------ values: schema, docs, NOTES


BAD_VALUES = """
api:
  replica: 3
  autoscaling:
    enabled: "yes"
postgres:
  enabled: false
"""


def test_bad_values_are_rejected_with_a_readable_message(render, tmp_path):
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(BAD_VALUES)
    proc = render.run("template", "x", str(CHART), "-f", str(bad))
    assert proc.returncode != 0
    msg = proc.stderr
    assert "values don't meet the specifications of the schema" in msg
    assert "additional properties 'replica' not allowed" in msg
    assert "/api/autoscaling/enabled" in msg and "want boolean" in msg
    assert "/externalDatabase/existingSecret" in msg


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (("image.tag=latest",), "/image/tag"),
        (("api.service.type=LoadBalancerr",), "/api/service/type"),
        (("containerSecurityContext.runAsNonRoot=false",), "/containerSecurityContext/runAsNonRoot"),
        (("api.resources.limits=null",), "/api/resources"),
        (("mlflow.enabled=false",), "/externalMlflow"),
    ],
    ids=["latest-tag", "service-type-enum", "root", "no-limits", "mlflow-off-without-url"],
)
def test_schema_rejects(render, sets, expected):
    args = ["template", "x", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = render.run(*args)
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr


def test_schema_objects_are_closed():
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node, path):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and node.get("additionalProperties") is not False
            ):
                open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert not open_objects


def test_every_value_is_documented_above_its_key():
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w-]*):", line)
        if not m or m.group(2) in ("requests", "limits"):
            continue
        above = lines[i - 1].strip()
        if not above.startswith("#"):
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert not undocumented, "\n".join(undocumented)
    assert lines[0].startswith("# yaml-language-server: $schema=values.schema.json")


def test_notes_tell_how_to_reach_everything(render):
    proc = render.run(
        "install", "rk", str(CHART), "--dry-run=client", "-n", NAMESPACE, "--set", "workflows.enabled=true"
    )
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"port-forward svc/{API} 8000:8000" in notes
    assert f"port-forward svc/{MLFLOW} 5000:5000" in notes
    assert "grafana" in notes.lower() and "argo-server" in notes
    assert "helm test rk" in notes


def test_chart_has_no_unpinned_dependencies():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for dep in chart.get("dependencies", []):
        assert dep["repository"].startswith("file://") or re.match(r"^\d+\.\d+\.\d+$", dep["version"])
    assert Path(CHART / "values.schema.json").is_file()


# ------------------------------------------------------------------ the landing zone


def load_step(docs) -> dict:
    cron = one(docs, "CronWorkflow", "incremental-load")["spec"]["workflowSpec"]
    return next(t for t in cron["templates"] if t["name"] == "load")


def source_parameter(docs) -> str:
    cron = one(docs, "CronWorkflow", "incremental-load")["spec"]["workflowSpec"]
    return next(p["value"] for p in cron["arguments"]["parameters"] if p["name"] == "source")


def test_incremental_load_reads_the_landing_zone_on_the_charts_minio_by_default(render):
    docs = render.docs("kind")
    assert source_parameter(docs) == "s3://landing/drops"
    env = env_of(load_step(docs)["container"])
    for name, key in (("AWS_ACCESS_KEY_ID", "access-key-id"), ("AWS_SECRET_ACCESS_KEY", "secret-access-key")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": LANDING, "key": key, "optional": True}
    assert set(one(docs, "Secret", LANDING)["data"]) == {"access-key-id", "secret-access-key"}
    config = one(docs, "ConfigMap", f"{RELEASE}-rakuten-mlops-config")["data"]
    key = env["AWS_ENDPOINT_URL"]["valueFrom"]["configMapKeyRef"]["key"]
    assert config[key] == f"http://{MINIO}:9000"
    script = one(docs, "Job", f"{MINIO}-bucket")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "for bucket in mlflow landing results" in script
    assert 'mc admin policy attach local rakuten-landing --user "$LANDING_ACCESS_KEY"' in script
    bucket_env = env_of(one(docs, "Job", f"{MINIO}-bucket")["spec"]["template"]["spec"]["containers"][0])
    assert bucket_env["LANDING_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == LANDING
    volumes = one(docs, "CronWorkflow", "incremental-load")["spec"]["workflowSpec"]["volumes"]
    assert volumes == [{"name": "source-data", "emptyDir": {}}], "no claim to wait for"
    assert not by_kind(docs, "PersistentVolumeClaim")
    for step in ("drift", "decide", "train"):  # only the loader holds the landing keys
        for wf in by_kind(docs, "CronWorkflow") + by_kind(docs, "WorkflowTemplate"):
            spec = wf["spec"].get("workflowSpec", wf["spec"])
            for t in spec.get("templates", []):
                if t["name"] == step:
                    assert "AWS_ACCESS_KEY_ID" not in env_of(t["container"])


def test_landing_zone_on_any_s3_through_values(render):
    docs = render.docs("external-services")
    assert source_parameter(docs) == "s3://rakuten-landing/drops"
    env = env_of(load_step(docs)["container"])
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "rakuten-landing"
    config = one(docs, "ConfigMap", f"{RELEASE}-rakuten-mlops-config")["data"]
    assert "RAKUTEN_LANDING_ENDPOINT" not in config, "AWS's own endpoint"
    assert config["RAKUTEN_LANDING_REGION"] == "eu-west-3"
    docs = render.docs("all-features")
    config = one(docs, "ConfigMap", f"{RELEASE}-rakuten-mlops-config")["data"]
    assert config["RAKUTEN_LANDING_ENDPOINT"] == "https://s3.eu-west-3.amazonaws.com"
    proc = render.run(
        "template", "x", str(CHART), "--set", "minio.enabled=false", "--set", "workflows.enabled=true",
        "--set", "externalS3.bucket=bkt", "--set", "externalS3.existingSecret=s",
    )  # fmt: skip
    assert proc.returncode != 0 and "set workflows.landingZone.url" in proc.stderr, proc.stderr


def test_source_data_volume_stays_an_option(render):
    docs = render.docs("kind", "1.31", ("workflows.source=volume",))
    assert source_parameter(docs) == "/data/source"
    claim = one(docs, "PersistentVolumeClaim", f"{RELEASE}-rakuten-mlops-source-data")
    volumes = one(docs, "CronWorkflow", "incremental-load")["spec"]["workflowSpec"]["volumes"]
    assert volumes == [
        {
            "name": "source-data",
            "persistentVolumeClaim": {"claimName": claim["metadata"]["name"], "readOnly": True},
        }
    ]
    mounts = load_step(docs)["container"]["volumeMounts"]
    assert {"name": "source-data", "mountPath": "/data/source", "readOnly": True} in mounts
    docs = render.docs(
        "kind", "1.31", ("workflows.source=volume", "workflows.sourceData.existingClaim=drops")
    )
    assert not by_kind(docs, "PersistentVolumeClaim")
    volumes = one(docs, "CronWorkflow", "incremental-load")["spec"]["workflowSpec"]["volumes"]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == "drops"


def test_schedules_and_suspend_from_values(render):
    docs = render.docs("all-features")
    crons = {c["metadata"]["name"]: c["spec"] for c in by_kind(docs, "CronWorkflow")}
    assert crons["drift-check"]["schedules"] == ["0 */6 * * *"]
    assert crons["incremental-load"]["schedules"] == ["*/15 * * * *"], "empty value: the rendered schedule"
    assert crons["rakuten-train-weekly"]["suspend"] is True
    assert crons["drift-check"]["suspend"] is False and crons["incremental-load"]["suspend"] is False
    proc = render.run("template", "x", str(CHART), "--set-string", "workflows.schedules.driftCheck=hourly")
    assert proc.returncode != 0 and "/workflows/schedules/driftCheck" in proc.stderr, proc.stderr


def test_catalogue_rescore_is_off_by_default_and_reads_the_landing_zone_into_the_results_bucket(render):
    cron = one(render.docs("kind"), "CronWorkflow", "catalogue-rescore")["spec"]
    assert cron["suspend"] is True, "off unless the values turn it on"
    params = {p["name"]: p["value"] for p in cron["workflowSpec"]["arguments"]["parameters"]}
    assert params["input"] == "s3://landing/catalogue/X_catalogue.csv"
    assert params["output"].startswith("s3://results/catalogue-rescore/{{workflow.creationTimestamp.Y}}-")
    step = next(t for t in cron["workflowSpec"]["templates"] if t["name"] == "score")["container"]
    assert step["args"][:5] == [
        "score",
        "--input",
        "{{inputs.parameters.input}}",
        "--output",
        "{{inputs.parameters.output}}",
    ]
    env = {e["name"]: e for e in step["env"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(env)
    docs = render.docs(
        "kind", "1.31",
        ("workflows.suspend.catalogueRescore=false", "workflows.catalogueRescore.input=s3://shop/all.parquet",
         "workflows.catalogueRescore.output=s3://scores/nightly/", "workflows.schedules.catalogueRescore=30 2 * * *"),
    )  # fmt: skip
    cron = one(docs, "CronWorkflow", "catalogue-rescore")["spec"]
    params = {p["name"]: p["value"] for p in cron["workflowSpec"]["arguments"]["parameters"]}
    assert cron["suspend"] is False and cron["schedules"] == ["30 2 * * *"]
    assert params["input"] == "s3://shop/all.parquet"
    assert params["output"].startswith("s3://scores/nightly/{{workflow.creationTimestamp.Y}}-")


def test_minio_images_are_pinned_by_digest(render):
    docs = render.docs()
    for kind, name in (("StatefulSet", MINIO), ("Job", f"{MINIO}-bucket")):
        image = container(docs, kind, name)["image"]
        assert re.fullmatch(r"quay\.io/minio/(minio|mc):RELEASE\.[\dTZ-]+@sha256:[0-9a-f]{64}", image), image
