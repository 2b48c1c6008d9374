"""Defaults shared by every workflow: image, namespace, identities, env, resources, policies.

The names below are the *plain values* the YAML is rendered with. The chart replaces each
of them with the release's value (see ``charts/rakuten-mlops/files/workflows/README.md``),
so every one of them must be a string that appears nowhere else in the rendered files.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import (
    ConfigMapEnv,
    ConfigMapEnvFrom,
    Container,
    CronWorkflow,
    EmptyDirVolume,
    Env,
    Parameter,
    Resources,
    SecretEnv,
)
from hera.workflows import RetryStrategy as HeraRetryStrategy
from hera.workflows.models import (
    Backoff,
    Capabilities,
    Metadata,
    PodGC,
    PodSecurityContext,
    SeccompProfile,
    SecurityContext,
    TTLStrategy,
    ValueFrom,
)

# ---- placeholders the chart substitutes (plain, valid values; each one unique in the output)
IMAGE = "ghcr.io/rakuten-mlops/app:0.1.0"
NAMESPACE = "rakuten"
SERVICE_ACCOUNT = "rakuten-mlops-workflow"
POSTGRES_SECRET = "rakuten-mlops-postgres"  # docs/architecture.md: key `database-url`
CONFIG_MAP = "rakuten-mlops-config"  # key MLFLOW_TRACKING_URI (required) + any RAKUTEN_* settings
SOURCE_DATA_CLAIM = "rakuten-mlops-source-data"  # optional PVC of CSV drops (workflows.sourceData)
LANDING_URL = "s3://landing/drops"  # s3://BUCKET/PREFIX of the landing zone that `data load` reads
LANDING_SECRET = "rakuten-mlops-landing"  # keys access-key-id, secret-access-key (optional Secret)
CATALOGUE_URL = "s3://landing/catalogue/X_catalogue.csv"  # the catalogue catalogue-rescore scores
RESULTS_URL = "s3://results/catalogue-rescore"  # s3://BUCKET/PREFIX where catalogue-rescore writes

PLACEHOLDERS = {
    "image": IMAGE,
    "namespace": NAMESPACE,
    "serviceAccount": SERVICE_ACCOUNT,
    "postgresSecret": POSTGRES_SECRET,
    "configMap": CONFIG_MAP,
    "sourceDataClaim": SOURCE_DATA_CLAIM,
    "landingUrl": LANDING_URL,
    "landingSecret": LANDING_SECRET,
    "catalogueUrl": CATALOGUE_URL,
    "resultsUrl": RESULTS_URL,
}

# ConfigMap keys of the landing zone's endpoint and region (absent: the AWS defaults).
LANDING_ENDPOINT_KEY = "RAKUTEN_LANDING_ENDPOINT"
LANDING_REGION_KEY = "RAKUTEN_LANDING_REGION"

# ---- names fixed by the contract (docs/architecture.md, Settings.train_workflow_template)
TRAIN_TEMPLATE = "rakuten-train"
TRAIN_ENTRYPOINT = "train-and-promote"
TRAINING_MUTEX = "rakuten-training"

CLI = "rakuten-mlops"
SCRATCH = "/tmp"  # writable emptyDir (root file system is read-only)
OUTPUTS_DIR = f"{SCRATCH}/outputs"
SOURCE_MOUNT = "/data/source"
TIMEZONE = "UTC"

LABELS = {
    "app.kubernetes.io/name": "rakuten-mlops",
    "app.kubernetes.io/part-of": "rakuten-mlops",
    "app.kubernetes.io/component": "workflows",
}
# Workflow pods carry these: the chart's NetworkPolicies let them reach Postgres, MLflow and MinIO.
POD_LABELS = {"app.kubernetes.io/name": "rakuten-mlops", "app.kubernetes.io/component": "workflow"}


def env() -> list:
    """Env of every step: the data DB from the Postgres Secret, MLflow and settings from the ConfigMap."""
    return [
        Env(name="RAKUTEN_HOME", value=f"{SCRATCH}/rakuten"),
        Env(name="HOME", value=SCRATCH),
        Env(name="MPLCONFIGDIR", value=f"{SCRATCH}/matplotlib"),
        ConfigMapEnv(
            name="MLFLOW_TRACKING_URI", config_map_name=CONFIG_MAP, config_map_key="MLFLOW_TRACKING_URI"
        ),
        SecretEnv(name="RAKUTEN_DATABASE_URL", secret_name=POSTGRES_SECRET, secret_key="database-url"),
    ]


def landing_env() -> list:
    """The standard AWS env of the landing zone, for the step that reads it and no other.

    Every reference is optional: a PVC source, or a pod identity that brings its own
    credentials, needs none of them.
    """
    return [
        SecretEnv(
            name="AWS_ACCESS_KEY_ID", secret_name=LANDING_SECRET, secret_key="access-key-id", optional=True
        ),
        SecretEnv(
            name="AWS_SECRET_ACCESS_KEY",
            secret_name=LANDING_SECRET,
            secret_key="secret-access-key",
            optional=True,
        ),
        ConfigMapEnv(
            name="AWS_ENDPOINT_URL",
            config_map_name=CONFIG_MAP,
            config_map_key=LANDING_ENDPOINT_KEY,
            optional=True,
        ),
        ConfigMapEnv(
            name="AWS_DEFAULT_REGION",
            config_map_name=CONFIG_MAP,
            config_map_key=LANDING_REGION_KEY,
            optional=True,
        ),
    ]


def env_from() -> list:
    """Optional extra settings (RAKUTEN_MIN_F1, RAKUTEN_RETRAIN_BACKLOG, ...) from the same ConfigMap."""
    return [ConfigMapEnvFrom(name=CONFIG_MAP, optional=True)]


# ---- resources per kind of step (requests sized for the 3k-100k row datasets of the project)
LIGHT = Resources(cpu_request="100m", cpu_limit="500m", memory_request="512Mi", memory_limit="1Gi")
LOAD = Resources(cpu_request="250m", cpu_limit="1", memory_request="512Mi", memory_limit="1Gi")
DRIFT = Resources(cpu_request="500m", cpu_limit="1", memory_request="1Gi", memory_limit="2Gi")
SCORE = Resources(cpu_request="1", cpu_limit="2", memory_request="1Gi", memory_limit="2Gi")
TRAIN = Resources(cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="4Gi")


def retry(limit: int = 2, duration: str = "30s", max_duration: str = "10m", expression: str | None = None):
    """Retry transient failures (pod loss, a database or MLflow blip) with exponential backoff."""
    return HeraRetryStrategy(
        limit=str(limit),
        retry_policy="Always",
        backoff=Backoff(duration=duration, factor="2", max_duration=max_duration),
        expression=expression,
    )


def output_file(name: str) -> str:
    return f"{OUTPUTS_DIR}/{name}"


def file_output(name: str, path: str) -> Parameter:
    """An output parameter read from a file the CLI wrote (``--output FILE``)."""
    return Parameter(name=name, value_from=ValueFrom(path=path))


def cli_step(
    name: str,
    args: list[str],
    *,
    inputs: list[Parameter] | None = None,
    outputs: list[Parameter] | None = None,
    resources: Resources = LIGHT,
    timeout_seconds: int = 900,
    retry_strategy=None,
    extra_volumes: list | None = None,
    extra_env: list | None = None,
    synchronization=None,
) -> Container:
    """A container template running ``rakuten-mlops ARGS`` from the application image."""
    return Container(
        name=name,
        image=IMAGE,
        image_pull_policy="IfNotPresent",
        command=[CLI],
        args=args,
        inputs=inputs,
        outputs=outputs,
        env=[*env(), *(extra_env or [])],
        env_from=env_from(),
        resources=resources,
        active_deadline_seconds=timeout_seconds,
        retry_strategy=retry_strategy if retry_strategy is not None else retry(),
        volumes=[EmptyDirVolume(name="scratch", mount_path=SCRATCH), *(extra_volumes or [])],
        security_context=SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=Capabilities(drop=["ALL"]),
        ),
        synchronization=synchronization,
    )


def workflow_defaults(*, deadline_seconds: int) -> dict:
    """Spec fields every Workflow, WorkflowTemplate and CronWorkflow's workflowSpec shares."""
    return {
        "namespace": NAMESPACE,
        "labels": dict(LABELS),
        "service_account_name": SERVICE_ACCOUNT,
        "active_deadline_seconds": deadline_seconds,
        "pod_metadata": Metadata(labels=dict(POD_LABELS)),
        "pod_gc": PodGC(strategy="OnPodSuccess"),
        "ttl_strategy": TTLStrategy(seconds_after_success=3 * 86400, seconds_after_failure=7 * 86400),
        "security_context": PodSecurityContext(
            run_as_non_root=True,
            run_as_user=10001,
            run_as_group=10001,
            fs_group=10001,
            seccomp_profile=SeccompProfile(type="RuntimeDefault"),
        ),
    }


def cron_workflow(
    name: str,
    description: str,
    *,
    schedule: str,
    deadline_seconds: int,
    starting_deadline_seconds: int = 3600,
    suspend: bool = False,
    **fields: Any,
) -> CronWorkflow:
    """A CronWorkflow with the shared defaults and policies (never overlap a still-running run, keep a
    short history); ``fields`` are its own (entrypoint, arguments, ...). Use as ``with ... as cron:``."""
    return CronWorkflow(
        name=name,
        annotations={"workflows.argoproj.io/description": description},
        schedules=[schedule],
        cron_suspend=suspend,  # rendered as `suspend: ...`: the chart's switch to pause a schedule
        timezone=TIMEZONE,
        concurrency_policy="Forbid",
        starting_deadline_seconds=starting_deadline_seconds,
        successful_jobs_history_limit=3,
        failed_jobs_history_limit=5,
        **workflow_defaults(deadline_seconds=deadline_seconds),
        **fields,
    )
