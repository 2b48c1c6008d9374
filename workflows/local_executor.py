"""Run the rendered Argo objects of this repository as local processes (tests, development).

It runs exactly what ``workflows/*.py`` render, so tests run the YAML itself (commands, arguments,
env, parameter wiring) against real servers. :func:`check` refuses anything else before anything
runs, with :class:`UnsupportedFeature` naming where it is. Tasks run one at a time, in the order
listed; a DAG stops at its first failed task, as Argo's ``failFast`` does.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUCCEEDED, FAILED, ERROR, SKIPPED = "Succeeded", "Failed", "Error", "Skipped"


class ExecutorError(RuntimeError):
    """The workflow cannot run as written (bad reference, missing parameter or secret)."""


class UnsupportedFeature(ExecutorError):
    """A valid Argo construct that the rendered workflows do not use, so this executor refuses it."""


_TAG = re.compile(r"\{\{(=?)\s*(.*?)\s*\}\}")
# jsonpath(NAME, '$.key.key') or asInt(NAME), optionally compared (== or !=) with a literal
_TERM = re.compile(
    r"\s*(?:jsonpath\(\s*([\w.\-]+)\s*,\s*'\$((?:\.[\w\-]+)+)'|asInt\(\s*([\w.\-]+))\s*\)"
    r"(?:\s*(==|!=)\s*(true|false|-?\d+|'[^']*'))?\s*"
)


def parse(source: str, where: str = "") -> list[re.Match]:
    """The terms of an expression of the rendered YAML: one ``TERM``, or comparisons joined by ``&&``."""
    terms = [_TERM.fullmatch(part) for part in source.split("&&")]
    if not all(terms) or (len(terms) > 1 and not all(t[4] for t in terms)):  # type: ignore[index]
        raise UnsupportedFeature(
            f"{where}: expression {source!r}: only jsonpath(NAME, '$.key') or asInt(NAME), optionally"
            " compared (== or !=) with a literal; comparisons may be joined by &&"
        )
    return terms  # type: ignore[return-value]


def evaluate(source: str, scope: Mapping[str, str]) -> Any:
    """An expression :func:`parse` accepts, evaluated as Argo's expr does."""
    results = []
    for json_name, path, int_name, op, literal in (t.groups() for t in parse(source)):
        if (name := json_name or int_name) not in scope:
            raise ExecutorError(f"expression {source!r}: {name!r} is not defined")
        try:
            value: Any = int(scope[name]) if int_name else json.loads(scope[name])
            for key in (path or "").split(".")[1:]:
                value = value[key]
        except (ValueError, KeyError, TypeError) as exc:
            raise ExecutorError(f"expression {source!r} on {scope[name]!r}: {exc!r}") from exc
        if op:
            right = json.loads(literal) if literal[0] != "'" else literal[1:-1]
            same = type(value) is type(right) and value == right  # expr: true == 'true' is false
            value = same if op == "==" else not same
        results.append(value)
    return results[0] if len(results) == 1 else all(results)


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace ``{{name}}`` and ``{{=expression}}`` tags; an unknown name is an error."""

    def replace(match: re.Match) -> str:
        if match.group(1):  # an expression's result, printed as Argo prints it
            value = evaluate(match.group(2), scope)
            return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        if match.group(2) not in scope:
            known = ", ".join(sorted(k for k in scope if not k.startswith("workflow.")))
            raise ExecutorError(f"unresolved {{{{{match.group(2)}}}}} (in scope: {known or 'nothing'})")
        return scope[match.group(2)]

    return _TAG.sub(replace, text)


def substitute_all(value: Any, scope: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, scope)
    if isinstance(value, list):
        return [substitute_all(item, scope) for item in value]
    if isinstance(value, dict):  # a retry expression is evaluated per attempt, not substituted
        return {k: v if k == "retryStrategy" else substitute_all(v, scope) for k, v in value.items()}
    return value


# Every field the rendered objects use; any other, anywhere in a spec, is refused. CLUSTER_ONLY fields
# are accepted, not looked into and not applied (neither are retry backoff and the run's deadline).
_FIELD_NAMES = """
    arguments entrypoint templates volumes workflowTemplateRef name container dag inputs outputs
    retryStrategy activeDeadlineSeconds synchronization mutexes command args env envFrom volumeMounts
    mountPath readOnly tasks template templateRef depends when parameters value enum description
    valueFrom path parameter expression limit retryPolicy backoff duration factor maxDuration emptyDir
    persistentVolumeClaim claimName secretKeyRef configMapKeyRef key optional configMapRef"""
FIELDS = set(_FIELD_NAMES.split())
CLUSTER_ONLY = {"image", "imagePullPolicy", "podGC", "podMetadata", "resources", "securityContext",
                "serviceAccountName", "ttlStrategy"}  # fmt: skip


def check(value: Any, where: str) -> None:
    """Refuse, saying where, any field outside :data:`FIELDS`, a retry policy other than ``Always``,
    ``depends`` other than on tasks listed above, and an expression that :func:`parse` refuses."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            check(item, f"{where}[{item.get('name', i) if isinstance(item, dict) else i}]")
    elif isinstance(value, str):
        for is_expression, source in _TAG.findall(value):
            if is_expression:
                parse(source, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            at = f"{where}.{key}"
            if key not in FIELDS | CLUSTER_ONLY:
                raise UnsupportedFeature(f"{where}: {key} not supported locally")
            if key == "retryPolicy" and item != "Always":
                raise UnsupportedFeature(f"{at}: {item!r} not supported locally (only Always)")
            if key == "expression":
                parse(item, at)
            if key not in CLUSTER_ONLY:
                check(item, at)
            for i, task in enumerate(item if key == "tasks" else []):  # they run in the order listed
                depends = task.get("depends")
                if depends and not set(depends.split(" && ")) <= {t["name"] for t in item[:i]}:
                    raise UnsupportedFeature(f"{at}[{task['name']}]: depends {depends!r} not supported locally"
                                             " (only names of tasks listed above it, joined by &&)")  # fmt: skip


@dataclass
class Attempt:
    """One try of a container step (one pod on a cluster)."""

    argv: list[str]
    exit_code: int | None
    phase: str
    message: str
    stdout: str = ""
    stderr: str = ""


@dataclass
class Node:
    """The record of one task, like a node in the Argo UI."""

    name: str
    phase: str = "Pending"
    message: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    mutexes: list[str] = field(default_factory=list)


@dataclass
class WorkflowRun(Node):
    """One submitted run: the entrypoint's node, with each task's node by path."""

    nodes: dict[str, Node] = field(default_factory=dict)
    spec: dict = field(default_factory=dict, repr=False)
    scope: dict[str, str] = field(default_factory=dict, repr=False)

    def node(self, path: str) -> Node:
        if path not in self.nodes:
            raise KeyError(f"no node {path!r}; nodes: {sorted(self.nodes)}")
        return self.nodes[path]

    def summary(self) -> str:
        lines = [f"{self.name}: {self.phase} {self.message}".rstrip()]
        lines += [f"  {path:<28} {n.phase:<10} {n.message}".rstrip() for path, n in self.nodes.items()]
        return "\n".join(lines)


class LocalExecutor:
    """Runs rendered Argo objects with local processes. ``objects``: every document a run may reference;
    ``secrets`` / ``config_maps``: ``{name: {key: value}}`` standing in for the cluster's; ``claims``:
    ``{claimName: directory}``; ``path``: directories searched for the containers' commands."""

    _running = threading.Lock()  # runs never overlap, as a template's mutexes guarantee on a cluster

    def __init__(self, objects, *, secrets=None, config_maps=None, claims=None, path=(), workdir=None,
                 log=None) -> None:  # fmt: skip
        self.objects = list(objects)
        self.secrets = {k: dict(v) for k, v in (secrets or {}).items()}
        self.config_maps = {k: dict(v) for k, v in (config_maps or {}).items()}
        self.claims = {k: Path(v) for k, v in (claims or {}).items()}
        self.path = [str(p) for p in path]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="argo-local-"))
        self.log = log or (lambda line: print(line, file=sys.stderr))

    def find(self, name: str, kind: str | None = None) -> dict:
        """The object's spec (a CronWorkflow's ``workflowSpec``), checked by :func:`check`."""
        found = [o for o in self.objects if o["metadata"]["name"] == name and kind in (None, o["kind"])]
        if len(found) != 1:
            names = [f"{o['kind']}/{o['metadata']['name']}" for o in self.objects]
            raise ExecutorError(f"{len(found)} {kind or 'objects'} named {name!r} among {names}")
        obj = found[0]
        spec = obj["spec"]["workflowSpec"] if obj["kind"] == "CronWorkflow" else obj["spec"]
        check(spec, f"{obj['kind']}/{name}")
        return {**spec, "namespace": obj["metadata"].get("namespace", "default")}

    def submit(self, name: str, parameters: Mapping[str, str] | None = None) -> WorkflowRun:
        """Run an object by name, like ``argo submit --from <kind>/<name> -p k=v``."""
        spec, parameters = self.find(name), parameters or {}
        if "workflowTemplateRef" in spec:  # the template's spec, the referring object's fields win
            base = self.find(spec.pop("workflowTemplateRef")["name"], "WorkflowTemplate")
            merged = {p["name"]: p for p in _parameters(base, "arguments")}
            merged |= {p["name"]: {**merged.get(p["name"], {}), **p} for p in _parameters(spec, "arguments")}
            spec = {**base, **spec, "arguments": {"parameters": list(merged.values())}}
        for t in spec["templates"]:  # every referenced WorkflowTemplate is checked before anything runs
            for task in t.get("dag", {}).get("tasks", []):
                if "templateRef" in task:
                    self.find(task["templateRef"]["name"], "WorkflowTemplate")
        declared = {p["name"]: p for p in _parameters(spec, "arguments")}
        if unknown := sorted(set(parameters) - set(declared)):
            raise ExecutorError(f"unknown parameters {unknown}; declared: {sorted(declared)}")
        run_name, now = f"{name}-{uuid.uuid4().hex[:5]}", datetime.datetime.now(datetime.UTC)
        scope = {"workflow.name": run_name, "workflow.creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        scope |= {f"workflow.creationTimestamp.{c}": now.strftime(f"%{c}") for c in "YmdHMSjy"}
        params = {n: substitute(_value(p, parameters), scope) for n, p in declared.items()}
        scope |= {f"workflow.parameters.{k}": v for k, v in params.items()}
        run = WorkflowRun(run_name, spec=spec, scope=scope)
        templates = {t["name"]: t for t in spec["templates"]}
        self.log(f"[{run_name}] start {name} parameters={params}")
        with self._running:
            try:
                self._template(run, templates, templates[spec["entrypoint"]], params, run)
            except ExecutorError as exc:
                run.phase, run.message = ERROR, str(exc)
        self.log(f"[{run_name}] {run.phase} {run.message}")
        return run

    def _template(self, run: WorkflowRun, library: dict, template: dict, args: Mapping, node: Node) -> None:
        """Run ``template`` with ``args``; names it does not declare as inputs are ignored."""
        inputs = {f"inputs.parameters.{p['name']}": _value(p, args) for p in _parameters(template, "inputs")}
        scope = {**run.scope, **inputs}
        mutexes = template.get("synchronization", {}).get("mutexes", [])
        node.mutexes = [f"{run.spec['namespace']}/{m['name']}" for m in mutexes]
        if "container" in template:
            self._container(run, template, scope, node)
        else:
            self._dag(run, library, template, scope, node)

    def _dag(self, run: WorkflowRun, library: dict, template: dict, scope: dict, node: Node) -> None:
        """Tasks in the order listed (dependencies first: see check); the first failed task fails the DAG."""
        for task in template["dag"]["tasks"]:
            name = task["name"]
            child = Node(f"{node.name}.{name}" if node.name in run.nodes else name)
            run.nodes[child.name] = child
            try:
                self._task(run, library, task, scope, child)
            except ExecutorError as exc:  # the task cannot run as written
                child.phase, child.message = ERROR, str(exc)
                self.log(f"  {child.name}: error: {exc}")
            scope = {**scope, **{f"tasks.{name}.outputs.parameters.{k}": v for k, v in child.outputs.items()}}
            if child.phase in (FAILED, ERROR):
                node.phase, node.message = FAILED, f"task {name} {child.phase.lower()}: {child.message}"
                return
        for p in _parameters(template, "outputs"):  # an expression gives what its {{=...}} tag would
            tag = p["valueFrom"].get("parameter") or "{{=" + p["valueFrom"]["expression"] + "}}"
            node.outputs[p["name"]] = substitute(tag, scope)
        node.phase = SUCCEEDED

    def _task(self, run: WorkflowRun, library: dict, task: dict, scope: Mapping, node: Node) -> None:
        condition = substitute(task.get("when", "true"), scope)
        if condition == "false":
            node.phase, node.message = SKIPPED, f"when {task['when']!r} is false"
            return
        if condition != "true":
            raise ExecutorError(f"task {task['name']!r}: when {condition!r} is not true or false")
        args = {p["name"]: substitute(p["value"], scope) for p in _parameters(task, "arguments")}
        name, owner = task.get("template"), "this workflow"
        if "templateRef" in task:  # the referenced template's own tree, from its WorkflowTemplate
            owner, name = task["templateRef"]["name"], task["templateRef"]["template"]
            library = {t["name"]: t for t in self.find(owner, "WorkflowTemplate")["templates"]}
        if name not in library:
            raise ExecutorError(f"task {task['name']!r}: {owner} has no template {name!r}")
        self._template(run, library, library[name], args, node)

    def _container(self, run: WorkflowRun, template: dict, scope: dict, node: Node) -> None:
        """Attempts until one succeeds, the retry limit is reached or the retry expression says stop."""
        strategy = template.get("retryStrategy", {})
        retry_if = strategy.get("expression")
        for _ in range(int(strategy.get("limit", 0)) + 1):
            attempt = self._attempt(run, substitute_all(template, scope), node)
            node.attempts.append(attempt)
            exit_code = -1 if attempt.exit_code is None else attempt.exit_code
            scope = {**scope, "lastRetry.exitCode": str(exit_code)}
            if attempt.phase == SUCCEEDED or (retry_if and not evaluate(retry_if, scope)):
                break
        node.phase, node.message = node.attempts[-1].phase, node.attempts[-1].message
        self.log(f"  {node.name}: {node.phase} after {len(node.attempts)} attempt(s) {node.message}".rstrip())

    def _attempt(self, run: WorkflowRun, template: dict, node: Node) -> Attempt:
        """One pod: fresh emptyDirs, env from the stand-in Secrets/ConfigMaps, the process, its outputs."""
        container = template["container"]
        pod = Path(tempfile.mkdtemp(prefix=f"{node.name}-", dir=self.workdir))  # the pod's own directory
        mounts = self._mounts([*run.spec.get("volumes", []), *template.get("volumes", [])], container, pod)
        env = self._env(container, mounts)
        argv = [_localize(a, mounts) for a in [*container.get("command", []), *container.get("args", [])]]
        executable = shutil.which(argv[0], path=env["PATH"]) if argv else None
        if executable is None:
            raise ExecutorError(f"command {argv[:1]} not found on PATH {env['PATH']!r}")
        timeout = template.get("activeDeadlineSeconds")
        self.log(f"  {node.name}: $ {' '.join(argv)}")
        proc = subprocess.Popen(
            [executable, *argv[1:]], env=env, cwd=pod, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = proc.communicate(timeout=float(timeout) if timeout else None)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            return Attempt(argv, None, FAILED, f"activeDeadlineSeconds {timeout} exceeded", stdout, stderr)
        for line in (stdout + stderr).splitlines()[-15:]:
            self.log(f"    | {line}")
        if proc.returncode != 0:
            return Attempt(argv, proc.returncode, FAILED, f"exit code {proc.returncode}", stdout, stderr)
        for p in _parameters(template, "outputs"):
            file = Path(_localize(p["valueFrom"]["path"], mounts))
            if not file.is_file():
                return Attempt(argv, 0, ERROR, f"output {p['name']!r}: {p['valueFrom']['path']} missing")
            node.outputs[p["name"]] = file.read_text().rstrip("\n")
        return Attempt(argv, 0, SUCCEEDED, "", stdout, stderr)

    def _mounts(self, volumes: list, container: dict, pod: Path) -> list[tuple[str, str]]:
        """(mountPath, local directory) pairs, longest path first."""
        declared, mounts = {v["name"]: v for v in volumes}, []
        for mount in container.get("volumeMounts", []):
            volume = declared.get(mount["name"], {})
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if "emptyDir" in volume:
                local = pod / "volumes" / mount["name"]
                local.mkdir(parents=True)
            elif claim in self.claims:
                local = self.claims[claim]
            else:
                raise ExecutorError(f"volume {mount['name']!r}: not declared, or its claim is not mapped")
            mounts.append((mount["mountPath"].rstrip("/"), str(local)))
        return sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    def _env(self, container: dict, mounts: list[tuple[str, str]]) -> dict[str, str]:
        """Only the container's env (plus PATH and locale): the host's environment does not leak in."""
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
        env["PATH"] = os.pathsep.join([*self.path, env.get("PATH", os.defpath)])
        for source in container.get("envFrom", []):
            ref = source["configMapRef"]
            if ref["name"] not in self.config_maps and not ref.get("optional"):
                raise ExecutorError(f"configMapRef {ref['name']!r} does not exist")
            env.update(self.config_maps.get(ref["name"], {}))
        for var in container.get("env", []):
            if "value" in var:  # a container path written in the YAML: rewritten under its mount
                env[var["name"]] = _localize(var["value"], mounts)
                continue
            ((kind, ref),) = var["valueFrom"].items()
            store = self.secrets if kind == "secretKeyRef" else self.config_maps
            if ref["key"] in store.get(ref["name"], {}):
                env[var["name"]] = store[ref["name"]][ref["key"]]
            elif not ref.get("optional"):  # as the kubelet does: an optional missing key sets nothing
                raise ExecutorError(f"env {var['name']}: {kind} {ref['name']}/{ref['key']} does not exist")
        return env


def _parameters(spec: Mapping, key: str) -> list[dict]:
    """The ``parameters`` under ``arguments``, ``inputs`` or ``outputs``."""
    return spec.get(key, {}).get("parameters", [])


def _value(declared: Mapping, given: Mapping[str, str]) -> str:
    """A parameter's value (given, else declared), checked against its ``enum``."""
    value = given.get(declared["name"], declared.get("value"))
    if value is None:
        raise ExecutorError(f"parameter {declared['name']!r} has no value: pass it")
    if "enum" in declared and value not in declared["enum"]:
        raise ExecutorError(f"parameter {declared['name']}={value!r} is not one of {declared['enum']}")
    return str(value)


def _localize(value: str, mounts: list[tuple[str, str]]) -> str:
    """A container path under a mount, rewritten to the local directory standing in for it."""
    for mount_path, local in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return local + value[len(mount_path) :]
    return value
