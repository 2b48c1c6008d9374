"""Run the rendered Argo objects of this repository as local processes (tests, development).

It runs exactly what ``workflows/*.py`` render, so tests run the YAML itself (commands, arguments,
env, parameter wiring) against real servers: Workflow, WorkflowTemplate and CronWorkflow objects,
``workflowTemplateRef``, parameters with ``enum``; container templates (env from values, Secrets
and ConfigMaps, ``emptyDir`` per pod, PVCs mapped to directories, output parameters from files,
``retryStrategy``, ``activeDeadlineSeconds``, ``synchronization.mutexes``); DAG templates (tasks
with ``template`` or ``templateRef``, ``depends`` on task names, ``when``, outputs from a
parameter or an expression); ``{{name}}`` tags and the few expressions the YAML holds.

Anything else is refused with :class:`UnsupportedFeature` naming it, before anything runs.
Tasks run one at a time; a DAG stops at its first failed task, as Argo's ``failFast`` does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUCCEEDED, FAILED, ERROR, SKIPPED = "Succeeded", "Failed", "Error", "Skipped"
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
# Every field the rendered objects use, per place; any other is refused before anything runs.
# Accepted and not applied (they mean something to a cluster only): the workflow's
# activeDeadlineSeconds, podGC, podMetadata, securityContext, serviceAccountName, ttlStrategy,
# and the container's image, imagePullPolicy, resources and securityContext.
FIELDS = {
    kind: set(names.split())
    for kind, names in (
        line.split(":")
        for line in """
spec: arguments entrypoint templates volumes workflowTemplateRef activeDeadlineSeconds podGC podMetadata
    securityContext serviceAccountName ttlStrategy
template: name container dag inputs outputs retryStrategy activeDeadlineSeconds synchronization volumes
container: command args env envFrom volumeMounts image imagePullPolicy resources securityContext
task: name template templateRef arguments depends when
templateRef: name template
parameters: parameters
parameter: name value enum description valueFrom
valueFrom: path parameter expression
retryStrategy: limit retryPolicy expression backoff
backoff: duration factor maxDuration
synchronization: mutexes
volume: name emptyDir persistentVolumeClaim
env: name value valueFrom
env source: secretKeyRef configMapKeyRef
envFrom: configMapRef""".replace("\n    ", " ")
        .strip()
        .splitlines()
    )
}


class ExecutorError(RuntimeError):
    """The workflow cannot run as written (bad reference, missing parameter or secret)."""


class UnsupportedFeature(ExecutorError):
    """A valid Argo construct that the rendered workflows do not use, so this executor refuses it."""


def _fields(obj: Mapping, kind: str, where: str) -> Mapping:
    extra = set(obj) - FIELDS[kind]
    if extra:
        raise UnsupportedFeature(f"{where}: {kind} field(s) {', '.join(sorted(extra))} not supported locally")
    return obj


def check(spec: Mapping, where: str) -> None:
    """Refuse anything in ``spec`` that the executor does not run (see :data:`FIELDS`)."""
    _fields(spec, "spec", where)
    parameters = [*_fields(spec.get("arguments", {}), "parameters", where).get("parameters", [])]
    for volume in spec.get("volumes", []):
        _fields(volume, "volume", f"{where} volume {volume['name']!r}")
    for t in spec.get("templates", []):
        at = f"{where} template {t['name']!r}"
        _fields(t, "template", at)
        if ("container" in t) == ("dag" in t):
            raise UnsupportedFeature(f"{at}: only container and dag templates")
        for io in ("inputs", "outputs"):
            parameters += _fields(t.get(io, {}), "parameters", f"{at} {io}").get("parameters", [])
        retry = _fields(t.get("retryStrategy", {}), "retryStrategy", at)
        _fields(retry.get("backoff", {}), "backoff", at)
        if retry.get("retryPolicy", "OnFailure") not in ("Always", "OnFailure"):
            raise UnsupportedFeature(f"{at}: retryPolicy {retry['retryPolicy']}: only Always and OnFailure")
        _fields(t.get("synchronization", {}), "synchronization", at)
        for volume in t.get("volumes", []):
            _fields(volume, "volume", f"{at} volume {volume['name']!r}")
        container = _fields(t.get("container", {}), "container", at)
        for var in container.get("env", []):
            _fields(_fields(var, "env", at).get("valueFrom", {}), "env source", f"{at} env {var['name']}")
        for source in container.get("envFrom", []):
            _fields(source, "envFrom", at)
        for task in t.get("dag", {}).get("tasks", []):
            _fields(task, "task", f"{at} task {task['name']!r}")
            _fields(task.get("templateRef", {}), "templateRef", f"{at} task {task['name']!r}")
            parameters += _fields(task.get("arguments", {}), "parameters", at).get("parameters", [])
            if not re.fullmatch(r"[\w-]+( && [\w-]+)*", task.get("depends", "x")):
                raise UnsupportedFeature(f"{at}: depends {task['depends']!r}: only task names joined by &&")
    for p in parameters:
        _fields(_fields(p, "parameter", where).get("valueFrom", {}), "valueFrom", f"{where} {p['name']}")


# ---------------------------------------------------------------- tags and expressions

_TAG = re.compile(r"\{\{(=?)\s*(.*?)\s*\}\}")
# NAME, jsonpath(NAME, '$.key'), asInt(NAME), each optionally compared (== or !=) with a literal
_EXPRESSION = re.compile(
    r"(?:(jsonpath|asInt)\(\s*([\w.\-]+)\s*(?:,\s*'([^']*)'\s*)?\)|([\w.\-]+))"
    r"(?:\s*(==|!=)\s*(true|false|-?\d+|'[^']*'))?"
)


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace ``{{name}}`` and ``{{=expression}}`` tags; an unknown name is an error."""

    def replace(match: re.Match) -> str:
        if match.group(1):
            return to_text(evaluate(match.group(2), scope))
        if match.group(2) not in scope:
            known = ", ".join(sorted(k for k in scope if not k.startswith("workflow.")))
            raise ExecutorError(f"unresolved {{{{{match.group(2)}}}}} (in scope: {known or 'nothing'})")
        return scope[match.group(2)]

    return _TAG.sub(replace, text)


def to_text(value: Any) -> str:
    """How Argo prints an expression's result into a template."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def evaluate(source: str, scope: Mapping[str, str]) -> Any:
    """The expressions the rendered YAML holds (see ``_EXPRESSION``), as Argo's expr evaluates them."""
    match = _EXPRESSION.fullmatch(source.strip())
    if not match or (match[1] == "jsonpath") != (match[3] is not None):
        raise UnsupportedFeature(
            f"expression {source!r}: only NAME, jsonpath(NAME, '$.key') or asInt(NAME),"
            " optionally compared (== or !=) with a literal"
        )
    function, argument, path, name, op, literal = match.groups()
    if (argument or name) not in scope:
        raise ExecutorError(f"expression {source!r}: {argument or name!r} is not defined")
    value: Any = scope[argument or name]
    try:
        if function == "jsonpath":
            if not re.fullmatch(r"\$(\.[\w\-]+)+", path):
                raise UnsupportedFeature(f"expression {source!r}: only $.key paths")
            for key in path[2:].split("."):
                value = json.loads(value) if isinstance(value, str) else value
                value = value[key]
        elif function == "asInt":
            value = int(value)
    except (ValueError, KeyError, TypeError) as exc:
        raise ExecutorError(f"expression {source!r} on {scope[argument]!r}: {exc!r}") from exc
    if op:
        right = json.loads(literal) if literal[0] != "'" else literal[1:-1]
        same = type(value) is type(right) and value == right  # expr: true == 'true' is false
        value = same if op == "==" else not same
    return value


# ---------------------------------------------------------------- records of a run


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
    template: str
    phase: str = "Pending"
    message: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    mutexes: list[str] = field(default_factory=list)


@dataclass
class WorkflowRun:
    name: str
    phase: str
    message: str
    parameters: dict[str, str]
    nodes: dict[str, Node]
    outputs: dict[str, str]
    root: Node

    def node(self, path: str) -> Node:
        if path not in self.nodes:
            raise KeyError(f"no node {path!r}; nodes: {sorted(self.nodes)}")
        return self.nodes[path]

    def summary(self) -> str:
        lines = [f"{self.name}: {self.phase} {self.message}".rstrip()]
        lines += [f"  {path:<28} {n.phase:<10} {n.message}".rstrip() for path, n in self.nodes.items()]
        return "\n".join(lines)


_MUTEXES: dict[str, threading.Lock] = {}
_MUTEXES_GUARD = threading.Lock()


def _mutex(name: str) -> threading.Lock:
    with _MUTEXES_GUARD:
        return _MUTEXES.setdefault(name, threading.Lock())


# ---------------------------------------------------------------- the executor


@dataclass
class _Run:
    """The state of one submitted run (runs in several threads do not share it)."""

    spec: dict
    namespace: str
    scope: dict[str, str]
    nodes: dict[str, Node] = field(default_factory=dict)


class LocalExecutor:
    """Runs rendered Argo objects with local processes.

    ``objects``: every document a run may reference; ``secrets`` / ``config_maps``:
    ``{name: {key: value}}`` standing in for the cluster's; ``claims``: ``{claimName: directory}``;
    ``path``: directories searched for the containers' commands (the venv's ``bin``).
    """

    def __init__(self, objects, *, secrets=None, config_maps=None, claims=None, path=(), workdir=None,
                 backoff_scale: float = 1.0, log=None) -> None:  # fmt: skip
        self.objects = list(objects)
        self.secrets = {k: dict(v) for k, v in (secrets or {}).items()}
        self.config_maps = {k: dict(v) for k, v in (config_maps or {}).items()}
        self.claims = {k: Path(v) for k, v in (claims or {}).items()}
        self.path = [str(p) for p in path]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="argo-local-"))
        self.backoff_scale = backoff_scale
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
            base = self.find(spec["workflowTemplateRef"]["name"], "WorkflowTemplate")
            merged = {p["name"]: p for p in base.get("arguments", {}).get("parameters", [])}
            for p in spec.get("arguments", {}).get("parameters", []):
                merged[p["name"]] = {**merged.get(p["name"], {}), **p}
            spec = {**base, **{k: v for k, v in spec.items() if k != "workflowTemplateRef"}}
            spec["arguments"] = {"parameters": list(merged.values())}
        declared = {p["name"]: p for p in spec.get("arguments", {}).get("parameters", [])}
        if set(parameters) - set(declared):
            unknown = sorted(set(parameters) - set(declared))
            raise ExecutorError(f"unknown parameters {unknown}; declared: {sorted(declared)}")
        params = {n: _value(p, parameters) for n, p in declared.items()}
        run_name = f"{name}-{uuid.uuid4().hex[:5]}"
        scope = {"workflow.name": run_name, **{f"workflow.parameters.{k}": v for k, v in params.items()}}
        run = _Run(spec, spec["namespace"], scope)
        templates = {t["name"]: t for t in spec["templates"]}
        root = Node(run_name, spec["entrypoint"])
        self.log(f"[{run_name}] start {name} parameters={params}")
        try:
            self._template(run, templates, templates[spec["entrypoint"]], params, root)
        except UnsupportedFeature:
            raise
        except ExecutorError as exc:
            root.phase, root.message = ERROR, str(exc)
        self.log(f"[{run_name}] {root.phase} {root.message}")
        return WorkflowRun(run_name, root.phase, root.message, params, run.nodes, root.outputs, root)

    def _template(self, run: _Run, library: dict, template: dict, args: Mapping, node: Node) -> None:
        """Run ``template`` with ``args``; names it does not declare as inputs are ignored."""
        node.template = template["name"]
        node.inputs = {p["name"]: _value(p, args) for p in template.get("inputs", {}).get("parameters", [])}
        scope = {**run.scope, **{f"inputs.parameters.{k}": v for k, v in node.inputs.items()}}
        mutexes = template.get("synchronization", {}).get("mutexes", [])
        node.mutexes = sorted(f"{m.get('namespace', run.namespace)}/{m['name']}" for m in mutexes)
        locks = [_mutex(name) for name in node.mutexes]
        for lock in locks:
            lock.acquire()
        try:
            if "container" in template:
                self._container(run, template, scope, node)
            else:
                self._dag(run, library, template, scope, node)
        finally:
            for lock in reversed(locks):
                lock.release()

    def _dag(self, run: _Run, library: dict, template: dict, scope: dict, node: Node) -> None:
        """Tasks in dependency order, one at a time; the first failed task fails the DAG."""
        tasks = {t["name"]: t for t in template["dag"]["tasks"]}
        after = {n: set(t["depends"].split(" && ")) if "depends" in t else set() for n, t in tasks.items()}
        done: list[str] = []
        local = dict(scope)
        while len(done) < len(tasks):
            ready = [n for n in tasks if n not in done and after[n] <= set(done)]
            if not ready:
                raise ExecutorError(
                    f"tasks {sorted(set(tasks) - set(done))} wait for unknown or cyclic tasks"
                )
            name = ready[0]
            path = f"{node.name}.{name}" if node.name in run.nodes else name
            child = self._task(run, library, tasks[name], local, path)
            done.append(name)
            local.update({f"tasks.{name}.outputs.parameters.{k}": v for k, v in child.outputs.items()})
            if child.phase in (FAILED, ERROR):
                node.phase, node.message = FAILED, f"task {name} {child.phase.lower()}: {child.message}"
                return
        for p in template.get("outputs", {}).get("parameters", []):
            source = p.get("valueFrom", {})
            if "parameter" in source:
                node.outputs[p["name"]] = substitute(source["parameter"], local)
            else:
                node.outputs[p["name"]] = to_text(evaluate(source["expression"], local))
        node.phase = SUCCEEDED

    def _task(self, run: _Run, library: dict, task: dict, scope: dict, path: str) -> Node:
        node = run.nodes[path] = Node(path, task.get("template", ""))
        try:
            condition = substitute(task.get("when", "true"), scope)
            if condition not in ("true", "false"):
                raise UnsupportedFeature(f"task {task['name']!r}: when {condition!r} is not true or false")
            if condition == "false":
                node.phase, node.message = SKIPPED, f"when {task['when']!r} is false"
                return node
            parameters = task.get("arguments", {}).get("parameters", [])
            args = {p["name"]: substitute(p["value"], scope) for p in parameters}
            name, owner = task.get("template"), "this workflow"
            if "templateRef" in task:  # the referenced template's own tree, from its WorkflowTemplate
                owner, name = task["templateRef"]["name"], task["templateRef"]["template"]
                library = {t["name"]: t for t in self.find(owner, "WorkflowTemplate")["templates"]}
            if name not in library:
                raise ExecutorError(f"task {task['name']!r}: {owner} has no template {name!r}")
            self._template(run, library, library[name], args, node)
        except UnsupportedFeature:
            raise
        except ExecutorError as exc:
            node.phase, node.message = ERROR, str(exc)
            self.log(f"  {path}: error: {exc}")
        return node

    def _container(self, run: _Run, template: dict, scope: dict, node: Node) -> None:
        """Attempts until one succeeds or the retry strategy stops (limit, policy, expression, time)."""
        strategy = template.get("retryStrategy", {})
        limit, policy = int(strategy.get("limit", 0)), strategy.get("retryPolicy", "OnFailure")
        backoff, started, retry_scope = strategy.get("backoff", {}), time.monotonic(), dict(scope)
        for number in range(limit + 1):
            attempt = self._attempt(run, substitute_all(template, retry_scope), node)
            node.attempts.append(attempt)
            code = -1 if attempt.exit_code is None else attempt.exit_code
            retry_scope.update({"lastRetry.exitCode": str(code), "lastRetry.status": attempt.phase})
            if (
                attempt.phase == SUCCEEDED
                or number == limit
                or (policy == "OnFailure" and attempt.phase == ERROR)
                or ("expression" in strategy and not evaluate(strategy["expression"], retry_scope))
            ):
                break
            delay = _seconds(backoff.get("duration", "0")) * float(backoff.get("factor", 1)) ** number
            if time.monotonic() - started + delay > _seconds(backoff.get("maxDuration", "0")) > 0:
                break
            self.log(f"  {node.name}: attempt {number + 1} {attempt.phase}, retrying in {delay:g}s")
            time.sleep(delay * self.backoff_scale)
        last = node.attempts[-1]
        node.phase, node.message = last.phase, last.message
        self.log(f"  {node.name}: {node.phase} after {len(node.attempts)} attempt(s) {last.message}".rstrip())

    def _attempt(self, run: _Run, template: dict, node: Node) -> Attempt:
        """One pod: fresh emptyDirs, env from the stand-in Secrets/ConfigMaps, the process, its outputs."""
        container = template["container"]
        pod_dir = Path(tempfile.mkdtemp(prefix=f"{node.name}-", dir=self.workdir))
        try:
            mounts = self._mounts(run, template, container, pod_dir)
            env = self._env(container, mounts)
            argv = [_localize(a, mounts) for a in [*container.get("command", []), *container.get("args", [])]]
            executable = shutil.which(argv[0], path=env["PATH"]) if argv else None
            if executable is None:
                raise ExecutorError(f"command {argv[:1]} not found on PATH {env['PATH']!r}")
        except ExecutorError as exc:
            return Attempt([], None, ERROR, str(exc))
        timeout = template.get("activeDeadlineSeconds")
        self.log(f"  {node.name}: $ {' '.join(argv)}")
        proc = subprocess.Popen(
            [executable, *argv[1:]], env=env, cwd=pod_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
        node.outputs = {}
        for p in template.get("outputs", {}).get("parameters", []):
            file = Path(_localize(p["valueFrom"]["path"], mounts))
            if not file.is_file():
                return Attempt(argv, 0, ERROR, f"output {p['name']!r}: {p['valueFrom']['path']} missing")
            node.outputs[p["name"]] = file.read_text().rstrip("\n")
        return Attempt(argv, 0, SUCCEEDED, "", stdout, stderr)

    def _mounts(self, run: _Run, template: dict, container: dict, pod_dir: Path) -> list[tuple[str, str]]:
        """(mountPath, local directory) pairs, longest path first."""
        volumes = {v["name"]: v for v in [*run.spec.get("volumes", []), *template.get("volumes", [])]}
        mounts = []
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ExecutorError(f"volume {mount['name']!r} is mounted but not declared")
            if "emptyDir" in volume:
                local = pod_dir / "volumes" / mount["name"]
                local.mkdir(parents=True)
            else:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in self.claims:
                    raise ExecutorError(f"PersistentVolumeClaim {claim!r} is not mapped to a local directory")
                local = self.claims[claim]
            mounts.append((mount["mountPath"].rstrip("/"), str(local)))
        return sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    def _env(self, container: dict, mounts: list[tuple[str, str]]) -> dict[str, str]:
        """Only the container's env (plus PATH and locale): the host's environment does not leak in."""
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
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
            if ref["key"] not in store.get(ref["name"], {}):
                if ref.get("optional"):  # as the kubelet does: an optional missing key sets nothing
                    continue
                raise ExecutorError(f"env {var['name']}: {kind} {ref['name']}/{ref['key']} does not exist")
            env[var["name"]] = store[ref["name"]][ref["key"]]
        return env


def _value(declared: Mapping, given: Mapping[str, str]) -> str:
    """A parameter's value (given, else declared), checked against its ``enum``."""
    value = given.get(declared["name"], declared.get("value"))
    if value is None:
        raise ExecutorError(f"parameter {declared['name']!r} has no value: pass it")
    if "enum" in declared and value not in declared["enum"]:
        raise ExecutorError(f"parameter {declared['name']}={value!r} is not one of {declared['enum']}")
    return str(value)


def substitute_all(value: Any, scope: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, scope)
    if isinstance(value, list):
        return [substitute_all(item, scope) for item in value]
    if isinstance(value, dict):  # a retry expression is evaluated per attempt, not substituted
        return {k: v if k == "retryStrategy" else substitute_all(v, scope) for k, v in value.items()}
    return value


def _localize(value: str, mounts: list[tuple[str, str]]) -> str:
    """A container path under a mount, rewritten to the local directory standing in for it."""
    for mount_path, local in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return local + value[len(mount_path) :]
    return value


def _seconds(duration: str) -> int:
    """Argo durations: ``30``, ``30s``, ``2m``, ``1h30m``."""
    parts = re.findall(r"(\d+)([hms]?)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        raise ExecutorError(f"cannot read duration {duration!r}")
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
