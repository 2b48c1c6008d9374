"""Run rendered Argo Workflow / WorkflowTemplate / CronWorkflow YAML as local processes.

This is not Argo: it is a faithful-enough interpreter of the parts of Argo's semantics our
workflows use, so tests can run *the rendered YAML itself* (the commands, arguments, env and
parameter wiring the cluster will run) against real servers. Covered:

* workflow ``arguments`` (with ``enum`` checks and ``-p`` overrides), entrypoint inputs taken from
  them, ``workflowTemplateRef``, CronWorkflow ``workflowSpec``;
* template inputs (``value``/``default``/``enum``) and arguments, ``{{...}}`` simple tags and
  ``{{=...}}`` expression tags (``workflow.*``, ``inputs.*``, ``tasks.*``, ``steps.*``, ``pod.name``,
  ``retries``, ``lastRetry.*``), unresolved tags are an error;
* DAGs (``depends`` with ``.Succeeded/.Failed/...``, ``&&``, ``||``, ``!``; ``dependencies``), steps
  (sequential groups), ``when``, ``continueOn``, ``templateRef`` into another WorkflowTemplate
  (whose nested ``template:`` names resolve inside that template, while volumes and the pod
  settings come from the running workflow, as in Argo);
* container and script templates: ``command``/``args`` run with exactly the container's env
  (``value``, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``, ``envFrom``; missing required
  keys fail the step like ``CreateContainerConfigError``), ``emptyDir`` volumes as a fresh
  directory per pod, PVCs mapped to local directories, paths under a mount rewritten;
* output parameters from files (``valueFrom.path``, ``default``), ``outputs.result`` (stdout),
  DAG/steps outputs (``valueFrom.parameter``, ``valueFrom.expression``), ``exitCode``;
* ``retryStrategy`` (``limit``, ``retryPolicy``, ``expression``, ``backoff`` scaled by
  ``backoff_scale``), ``activeDeadlineSeconds`` (step and workflow), ``synchronization.mutexes``
  (a process-wide lock per name, so concurrent local runs serialize like on a cluster).

Not covered (they raise :class:`UnsupportedFeature`): loops (``withItems``/``withParam``/
``withSequence``), semaphores, ``onExit``/hooks, artifacts, resource/http/suspend/plugin templates.
Tasks run one at a time in declaration order; parallelism, scheduling, pod specs, RBAC and the
controller itself only a cluster exercises.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workflows.expressions import ExpressionError, evaluate, evaluate_when, to_template_string

# ---------------------------------------------------------------- errors and results


class ExecutorError(RuntimeError):
    """The workflow cannot run as written (bad reference, missing parameter, unknown template)."""


class UnsupportedFeature(ExecutorError):
    """A valid Argo feature this local executor does not implement."""


SUCCEEDED, FAILED, ERROR, SKIPPED, OMITTED = "Succeeded", "Failed", "Error", "Skipped", "Omitted"


@dataclass
class Attempt:
    """One try of a container step (one pod on a cluster)."""

    argv: list[str]
    exit_code: int | None
    phase: str
    message: str
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Node:
    """The record of one task/step, like a node in the Argo UI."""

    name: str
    template: str
    phase: str = "Pending"
    message: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    result: str | None = None
    exit_code: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    mutexes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.phase == SUCCEEDED


@dataclass
class WorkflowRun:
    """The outcome of one local run."""

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
        for path, node in self.nodes.items():
            detail = node.message or ""
            lines.append(f"  {path:<28} {node.phase:<10} {detail}".rstrip())
        return "\n".join(lines)


# ---------------------------------------------------------------- loading


def load_objects(paths: Iterable[Path | str]) -> list[dict]:
    """Read every YAML document of the given files or directories (``*.yaml``)."""
    docs: list[dict] = []
    for raw in paths:
        path = Path(raw)
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            docs.extend(doc for doc in yaml.safe_load_all(file.read_text()) if doc)
    return docs


# ---------------------------------------------------------------- substitution

_TAG = re.compile(r"\{\{(=?)(.*?)\}\}", re.DOTALL)


def _nest(flat: Mapping[str, str]) -> dict:
    """``{"a.b.c": v}`` -> ``{"a": {"b": {"c": v}}}`` (the environment of expression tags)."""
    root: dict = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = root
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):  # "a" is a value and "a.b" too: keep the value
                break
            node = nxt
        else:
            node.setdefault(parts[-1], value)
    return root


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace ``{{name}}`` and ``{{=expr}}`` tags; an unknown name is an error."""

    def replace(match: re.Match) -> str:
        is_expr, body = match.group(1), match.group(2).strip()
        if is_expr:
            try:
                return to_template_string(evaluate(body, _nest(scope)))
            except ExpressionError as exc:
                raise ExecutorError(f"expression {{{{={body}}}}}: {exc}") from exc
        if body not in scope:
            known = ", ".join(sorted(k for k in scope if not k.startswith("workflow.")))
            raise ExecutorError(f"unresolved {{{{{body}}}}} (in scope: {known or 'nothing'})")
        return scope[body]

    return _TAG.sub(replace, text)


def substitute_all(value: Any, scope: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, scope)
    if isinstance(value, list):
        return [substitute_all(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: substitute_all(item, scope) for key, item in value.items()}
    return value


# ---------------------------------------------------------------- depends

_DEPENDS_TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||!|[A-Za-z0-9_\-]+(?:\.[A-Za-z]+)?)")
_RESULTS = {
    "Succeeded": {SUCCEEDED},
    "Failed": {FAILED},
    "Errored": {ERROR},
    "Skipped": {SKIPPED},
    "Omitted": {OMITTED},
    "Completed": {SUCCEEDED, FAILED},
    "Daemoned": set(),
}


def depends_names(expression: str) -> set[str]:
    names = set()
    for token in _DEPENDS_TOKEN.findall(expression):
        if token not in ("(", ")", "&&", "||", "!"):
            names.add(token.split(".")[0])
    return names


def evaluate_depends(expression: str, phases: Mapping[str, str]) -> bool:
    """Argo's ``depends``: ``A`` means A succeeded, was skipped or daemoned; ``A.Failed`` etc."""
    python = []
    for token in _DEPENDS_TOKEN.findall(expression):
        if token in ("(", ")"):
            python.append(token)
        elif token in ("&&", "||", "!"):
            python.append({"&&": " and ", "||": " or ", "!": " not "}[token])
        else:
            name, _, result = token.partition(".")
            phase = phases[name]
            if not result:
                ok = phase in (SUCCEEDED, SKIPPED)
            elif result == "AnySucceeded" or result == "AllFailed":
                raise UnsupportedFeature(f"depends {token}: only for loops, which are not supported")
            elif result in _RESULTS:
                ok = phase in _RESULTS[result]
            else:
                raise ExecutorError(f"depends: unknown result {result!r} in {expression!r}")
            python.append(str(ok))
    return bool(eval("".join(python), {"__builtins__": {}}))  # noqa: S307 - only True/False/and/or/not/()


# ---------------------------------------------------------------- mutexes

_MUTEXES: dict[str, threading.Lock] = {}
_MUTEXES_GUARD = threading.Lock()


def _mutex(name: str) -> threading.Lock:
    with _MUTEXES_GUARD:
        return _MUTEXES.setdefault(name, threading.Lock())


def _mutex_names(sync: Mapping | None, namespace: str) -> list[str]:
    if not sync:
        return []
    if "semaphores" in sync or "semaphore" in sync:
        raise UnsupportedFeature("synchronization.semaphores")
    if "mutex" in sync:
        raise ExecutorError("synchronization.mutex (singular) was removed in Argo v4: use mutexes")
    return [f"{m.get('namespace', namespace)}/{m['name']}" for m in sync.get("mutexes", [])]


# ---------------------------------------------------------------- the executor

DEFAULT_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "SYSTEMROOT")


@dataclass
class _Context:
    """Where a template is being run: its template library, scope and node path."""

    templates: dict[str, dict]
    library: str  # name of the object whose templates these are
    path: str


class LocalExecutor:
    """Runs Argo objects from rendered YAML with local processes.

    ``objects``: every document the run may reference (WorkflowTemplates for ``templateRef``).
    ``secrets`` / ``config_maps``: ``{name: {key: value}}`` standing in for the cluster's objects.
    ``claims``: ``{claimName: local directory}`` for PersistentVolumeClaim volumes.
    ``path``: directories searched for the containers' commands (e.g. the venv's ``bin``).
    """

    def __init__(
        self,
        objects: Iterable[dict],
        *,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        config_maps: Mapping[str, Mapping[str, str]] | None = None,
        claims: Mapping[str, str | Path] | None = None,
        path: Iterable[str | Path] = (),
        workdir: str | Path | None = None,
        backoff_scale: float = 1.0,
        passthrough_env: Iterable[str] = DEFAULT_PASSTHROUGH,
        log=None,
    ) -> None:
        self.objects = list(objects)
        self.secrets = {k: dict(v) for k, v in (secrets or {}).items()}
        self.config_maps = {k: dict(v) for k, v in (config_maps or {}).items()}
        self.claims = {k: Path(v) for k, v in (claims or {}).items()}
        self.path = [str(p) for p in path]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="argo-local-"))
        self.backoff_scale = backoff_scale
        self.passthrough = tuple(passthrough_env)
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self._local = threading.local()  # the state of the run in progress, per thread

    @property
    def _run_state(self) -> dict:
        return self._local.run_state

    @_run_state.setter
    def _run_state(self, value: dict) -> None:
        self._local.run_state = value

    @property
    def _global_scope(self) -> dict:
        return self._local.global_scope

    @_global_scope.setter
    def _global_scope(self, value: dict) -> None:
        self._local.global_scope = value

    # ------------------------------------------------------------ lookup

    def find(self, name: str, kind: str | None = None) -> dict:
        matches = [
            o
            for o in self.objects
            if o.get("metadata", {}).get("name") == name and (kind is None or o.get("kind") == kind)
        ]
        if not matches:
            raise ExecutorError(f"no {kind or 'object'} named {name!r} among {self._names()}")
        if len(matches) > 1:
            raise ExecutorError(f"{name!r} is ambiguous: pass kind= ({[m['kind'] for m in matches]})")
        return matches[0]

    def _names(self) -> list[str]:
        return [f"{o.get('kind')}/{o.get('metadata', {}).get('name')}" for o in self.objects]

    # ------------------------------------------------------------ entry point

    def submit(
        self, name: str, parameters: Mapping[str, str] | None = None, *, kind: str | None = None
    ) -> WorkflowRun:
        """Run an object by name, like ``argo submit --from <kind>/<name> -p k=v``."""
        obj = self.find(name, kind)
        return self.run(obj, parameters)

    def run(self, obj: dict, parameters: Mapping[str, str] | None = None) -> WorkflowRun:
        kind = obj.get("kind")
        if kind == "CronWorkflow":
            spec = obj["spec"]["workflowSpec"]
        elif kind in ("Workflow", "WorkflowTemplate"):
            spec = obj["spec"]
        else:
            raise ExecutorError(f"cannot run a {kind}")
        meta = obj.get("metadata", {})
        library = meta.get("name", "workflow")
        if "workflowTemplateRef" in spec:
            ref = spec["workflowTemplateRef"]
            if ref.get("clusterScope"):
                raise UnsupportedFeature("workflowTemplateRef.clusterScope")
            template_obj = self.find(ref["name"], "WorkflowTemplate")
            spec = self._merge_spec(template_obj["spec"], spec)
            library = ref["name"]
        for key in ("onExit", "hooks", "volumeClaimTemplates"):
            if key in spec:
                raise UnsupportedFeature(f"spec.{key}")
        run_name = (
            f"{meta.get('name') or meta.get('generateName', 'workflow-').rstrip('-')}-{uuid.uuid4().hex[:5]}"
        )
        namespace = meta.get("namespace", "default")
        params = self._workflow_parameters(spec, parameters or {})
        self._run_state = {
            "spec": spec,
            "namespace": namespace,
            "deadline": time.monotonic() + float(spec["activeDeadlineSeconds"])
            if "activeDeadlineSeconds" in spec
            else None,
            "nodes": {},
            "name": run_name,
        }
        global_scope = {
            "workflow.name": run_name,
            "workflow.namespace": namespace,
            "workflow.uid": str(uuid.uuid4()),
            "workflow.serviceAccountName": spec.get("serviceAccountName", "default"),
            "workflow.creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **{f"workflow.parameters.{k}": v for k, v in params.items()},
            "workflow.parameters": json.dumps([{"name": k, "value": v} for k, v in params.items()]),
        }
        self._global_scope = global_scope
        templates = {t["name"]: t for t in spec.get("templates", [])}
        entry = spec.get("entrypoint")
        if entry not in templates:
            raise ExecutorError(f"entrypoint {entry!r} is not a template of {library} ({sorted(templates)})")
        wf_mutexes = _mutex_names(spec.get("synchronization"), namespace)
        self.log(f"[{run_name}] start {kind}/{meta.get('name')} parameters={params}")
        with _Locks(wf_mutexes):
            root = Node(name=run_name, template=entry)
            entry_args = {
                p["name"]: params[p["name"]]
                for p in templates[entry].get("inputs", {}).get("parameters", [])
                if p["name"] in params
            }
            try:
                self._run_template(templates[entry], entry_args, root, _Context(templates, library, ""))
            except UnsupportedFeature:
                raise
            except ExecutorError as exc:
                root.phase, root.message = ERROR, str(exc)
        self.log(f"[{run_name}] {root.phase} {root.message}")
        return WorkflowRun(
            name=run_name,
            phase=root.phase,
            message=root.message,
            parameters=params,
            nodes=self._run_state["nodes"],
            outputs=root.outputs,
            root=root,
        )

    @staticmethod
    def _merge_spec(template_spec: dict, workflow_spec: dict) -> dict:
        """A Workflow referencing a WorkflowTemplate: the workflow's fields win, arguments merge by name."""
        merged = {**template_spec, **{k: v for k, v in workflow_spec.items() if k != "workflowTemplateRef"}}
        params = {p["name"]: p for p in template_spec.get("arguments", {}).get("parameters", [])}
        for p in workflow_spec.get("arguments", {}).get("parameters", []):
            params[p["name"]] = {**params.get(p["name"], {}), **p}
        if params:
            merged["arguments"] = {"parameters": list(params.values())}
        return merged

    @staticmethod
    def _workflow_parameters(spec: dict, overrides: Mapping[str, str]) -> dict[str, str]:
        declared = {p["name"]: p for p in spec.get("arguments", {}).get("parameters", [])}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise ExecutorError(f"unknown parameters {sorted(unknown)}; declared: {sorted(declared)}")
        values = {}
        for name, p in declared.items():
            if name in overrides:
                value = overrides[name]
            elif "value" in p:
                value = p["value"]
            elif "default" in p:
                value = p["default"]
            else:
                raise ExecutorError(f"workflow parameter {name!r} has no value: pass it")
            if not isinstance(value, str):
                raise ExecutorError(f"parameter {name!r} must be a string, got {value!r}")
            if "enum" in p and value not in p["enum"]:
                raise ExecutorError(f"parameter {name!r}={value!r} is not one of {p['enum']}")
            values[name] = value
        return values

    # ------------------------------------------------------------ templates

    def _resolve_inputs(self, template: dict, arguments: Mapping[str, str]) -> dict[str, str]:
        values = {}
        for p in template.get("inputs", {}).get("parameters", []):
            name = p["name"]
            if name in arguments:
                value = arguments[name]
            elif "value" in p:
                value = substitute(p["value"], self._global_scope)
            elif "default" in p:
                value = substitute(p["default"], self._global_scope)
            else:
                raise ExecutorError(
                    f"template {template.get('name')!r}: input parameter {name!r} was not supplied"
                )
            if "enum" in p and value not in p["enum"]:
                raise ExecutorError(
                    f"template {template.get('name')!r}: {name}={value!r} is not one of {p['enum']}"
                )
            values[name] = value
        if template.get("inputs", {}).get("artifacts"):
            raise UnsupportedFeature("input artifacts")
        return values

    def _run_template(self, template: dict, arguments: Mapping[str, str], node: Node, ctx: _Context) -> None:
        inputs = self._resolve_inputs(template, arguments)
        node.inputs = inputs
        node.template = template.get("name", node.template)
        scope = {**self._global_scope, **{f"inputs.parameters.{k}": v for k, v in inputs.items()}}
        scope["inputs.parameters"] = json.dumps([{"name": k, "value": v} for k, v in inputs.items()])
        mutexes = _mutex_names(template.get("synchronization"), self._run_state["namespace"])
        node.mutexes = mutexes
        with _Locks(mutexes):
            if "container" in template or "script" in template:
                self._run_container(template, scope, node)
            elif "dag" in template:
                self._run_dag(template, scope, node, ctx)
            elif "steps" in template:
                self._run_steps(template, scope, node, ctx)
            else:
                kinds = sorted(
                    set(template) & {"resource", "http", "suspend", "plugin", "containerSet", "data"}
                )
                raise UnsupportedFeature(f"template {template.get('name')!r} of kind {kinds or 'unknown'}")

    def _template_for(self, invocation: dict, ctx: _Context) -> tuple[dict, _Context]:
        if "templateRef" in invocation:
            ref = invocation["templateRef"]
            if ref.get("clusterScope"):
                raise UnsupportedFeature("templateRef.clusterScope")
            obj = self.find(ref["name"], "WorkflowTemplate")
            library = {t["name"]: t for t in obj["spec"].get("templates", [])}
            if ref["template"] not in library:
                raise ExecutorError(
                    f"templateRef: WorkflowTemplate {ref['name']!r} has no template {ref['template']!r}"
                )
            return library[ref["template"]], _Context(library, ref["name"], ctx.path)
        if "inline" in invocation:
            return invocation["inline"], ctx
        name = invocation.get("template")
        if name not in ctx.templates:
            raise ExecutorError(
                f"{invocation.get('name')!r} calls unknown template {name!r} in {ctx.library}"
            )
        return ctx.templates[name], ctx

    # ------------------------------------------------------------ DAG and steps

    def _invoke(self, invocation: dict, scope: Mapping[str, str], path: str, ctx: _Context) -> Node:
        """Run one DAG task or step: arguments, ``when``, then its template."""
        for loop in ("withItems", "withParam", "withSequence"):
            if loop in invocation:
                raise UnsupportedFeature(f"{loop} on {invocation['name']!r}")
        if "onExit" in invocation or "hooks" in invocation:
            raise UnsupportedFeature(f"onExit/hooks on {invocation['name']!r}")
        node = Node(name=path, template=invocation.get("template") or str(invocation.get("templateRef")))
        self._run_state["nodes"][path] = node
        try:
            self._invoke_node(invocation, scope, node, ctx)
        except UnsupportedFeature:
            raise
        except ExecutorError as exc:
            node.phase, node.message = ERROR, str(exc)
            self.log(f"  {path}: error: {exc}")
        return node

    def _invoke_node(self, invocation: dict, scope: Mapping[str, str], node: Node, ctx: _Context) -> None:
        path = node.name
        if "when" in invocation:
            condition = substitute(invocation["when"], scope)
            try:
                run_it = evaluate_when(condition)
            except ExpressionError as exc:
                raise ExecutorError(f"{path}: when {invocation['when']!r} -> {condition!r}: {exc}") from exc
            if not run_it:
                node.phase, node.message = SKIPPED, f"when '{condition}' evaluated false"
                self.log(f"  {path}: skipped ({node.message})")
                return
        arguments = {
            p["name"]: substitute(p["value"], scope) if "value" in p else self._argument_from(p, path)
            for p in invocation.get("arguments", {}).get("parameters", [])
        }
        if invocation.get("arguments", {}).get("artifacts"):
            raise UnsupportedFeature("artifact arguments")
        template, sub_ctx = self._template_for(invocation, ctx)
        self._run_template(template, arguments, node, _Context(sub_ctx.templates, sub_ctx.library, path))

    @staticmethod
    def _argument_from(p: dict, path: str) -> str:
        raise UnsupportedFeature(f"{path}: argument {p['name']!r} without a plain value ({sorted(p)})")

    def _check_deadline(self) -> None:
        deadline = self._run_state["deadline"]
        if deadline is not None and time.monotonic() > deadline:
            raise ExecutorError("workflow activeDeadlineSeconds exceeded")

    def _run_dag(self, template: dict, scope: dict, node: Node, ctx: _Context) -> None:
        tasks = {t["name"]: t for t in template["dag"]["tasks"]}
        deps = {}
        for name, task in tasks.items():
            if "depends" in task and "dependencies" in task:
                raise ExecutorError(f"task {name!r} sets both depends and dependencies")
            deps[name] = (
                depends_names(task["depends"]) if "depends" in task else set(task.get("dependencies", []))
            )
            unknown = deps[name] - set(tasks)
            if unknown:
                raise ExecutorError(f"task {name!r} depends on unknown tasks {sorted(unknown)}")
        phases: dict[str, str] = {}
        local = dict(scope)
        failed = []
        pending = list(tasks)
        while pending:
            ready = [n for n in pending if deps[n] <= set(phases)]
            if not ready:
                raise ExecutorError(f"dependency cycle among {pending}")
            name = ready[0]
            pending.remove(name)
            task = tasks[name]
            path = f"{ctx.path}.{name}" if ctx.path else name
            expression = task.get("depends") or " && ".join(sorted(deps[name]))
            if expression and not evaluate_depends(expression, phases):
                child = Node(
                    name=path,
                    template=task.get("template", ""),
                    phase=OMITTED,
                    message=f"depends {expression}",
                )
                self._run_state["nodes"][path] = child
            else:
                self._check_deadline()
                child = self._invoke(task, local, path, ctx)
            phases[name] = child.phase
            self._export(local, "tasks", name, child)
            if child.phase in (FAILED, ERROR) and not self._continues(task, child):
                failed.append(name)
        if failed:
            node.phase, node.message = FAILED, f"tasks failed: {', '.join(failed)}"
            return
        self._template_outputs(template, local, node)

    def _run_steps(self, template: dict, scope: dict, node: Node, ctx: _Context) -> None:
        local = dict(scope)
        for group in template["steps"]:
            failed = []
            for step in group:
                path = f"{ctx.path}.{step['name']}" if ctx.path else step["name"]
                self._check_deadline()
                child = self._invoke(step, local, path, ctx)
                if child.phase in (FAILED, ERROR) and not self._continues(step, child):
                    failed.append(step["name"])
            for step in group:
                path = f"{ctx.path}.{step['name']}" if ctx.path else step["name"]
                self._export(local, "steps", step["name"], self._run_state["nodes"][path])
            if failed:
                node.phase, node.message = FAILED, f"steps failed: {', '.join(failed)}"
                return
        self._template_outputs(template, local, node)

    @staticmethod
    def _continues(invocation: dict, child: Node) -> bool:
        cont = invocation.get("continueOn", {})
        return bool(
            cont.get("failed") and child.phase == FAILED or cont.get("error") and child.phase == ERROR
        )

    @staticmethod
    def _export(scope: dict, kind: str, name: str, child: Node) -> None:
        prefix = f"{kind}.{name}"
        scope[f"{prefix}.status"] = child.phase
        scope[f"{prefix}.id"] = child.name
        if child.exit_code is not None:
            scope[f"{prefix}.exitCode"] = str(child.exit_code)
        if child.result is not None:
            scope[f"{prefix}.outputs.result"] = child.result
        for key, value in child.outputs.items():
            scope[f"{prefix}.outputs.parameters.{key}"] = value
        if child.outputs:
            scope[f"{prefix}.outputs.parameters"] = json.dumps(child.outputs)

    def _template_outputs(self, template: dict, scope: dict, node: Node) -> None:
        """DAG/steps outputs: ``valueFrom.parameter`` (substituted) or ``valueFrom.expression``."""
        for p in template.get("outputs", {}).get("parameters", []):
            source = p.get("valueFrom", {})
            try:
                if "parameter" in source:
                    node.outputs[p["name"]] = substitute(source["parameter"], scope)
                elif "expression" in source:
                    node.outputs[p["name"]] = to_template_string(evaluate(source["expression"], _nest(scope)))
                elif "value" in p:
                    node.outputs[p["name"]] = substitute(p["value"], scope)
                else:
                    raise UnsupportedFeature(f"output {p['name']!r} from {sorted(source)}")
            except (ExecutorError, ExpressionError) as exc:
                if "default" in source:
                    node.outputs[p["name"]] = source["default"]
                    continue
                node.phase, node.message = ERROR, f"output {p['name']!r}: {exc}"
                return
        node.phase = SUCCEEDED

    # ------------------------------------------------------------ containers

    def _run_container(self, template: dict, scope: dict, node: Node) -> None:
        strategy = template.get("retryStrategy") or {}
        limit = int(substitute(str(strategy.get("limit", 0)), scope)) if strategy else 0
        policy = strategy.get("retryPolicy", "OnFailure")
        backoff = strategy.get("backoff") or {}
        started = time.monotonic()
        retry_scope = dict(scope)
        for attempt_no in range(limit + 1):
            retry_scope["retries"] = str(attempt_no)
            resolved = substitute_all(
                {k: v for k, v in template.items() if k not in ("retryStrategy", "outputs")}, retry_scope
            )
            outputs_spec = substitute_all(template.get("outputs", {}), retry_scope)
            attempt = self._attempt(resolved, outputs_spec, node, retry_scope)
            node.attempts.append(attempt)
            if attempt.phase == SUCCEEDED:
                break
            retry_scope.update(
                {
                    "lastRetry.exitCode": "-1" if attempt.exit_code is None else str(attempt.exit_code),
                    "lastRetry.status": attempt.phase,
                    "lastRetry.duration": f"{attempt.seconds:.0f}",
                    "lastRetry.message": attempt.message,
                }
            )
            if attempt_no == limit or not self._should_retry(strategy, policy, attempt, retry_scope):
                break
            delay = self._backoff_delay(backoff, attempt_no)
            if "maxDuration" in backoff and time.monotonic() - started + delay > _seconds(
                backoff["maxDuration"]
            ):
                node.message = f"{attempt.message}; backoff maxDuration reached"
                break
            self.log(f"  {node.name}: attempt {attempt_no + 1} {attempt.phase}, retrying in {delay:.1f}s")
            time.sleep(delay)
        last = node.attempts[-1]
        node.phase = last.phase
        node.exit_code = last.exit_code
        node.message = node.message or last.message
        seconds = sum(a.seconds for a in node.attempts)
        self.log(
            f"  {node.name}: {node.phase} after {len(node.attempts)} attempt(s), {seconds:.1f}s {last.message}".rstrip()
        )

    @staticmethod
    def _should_retry(strategy: dict, policy: str, attempt: Attempt, scope: dict) -> bool:
        allowed = {
            "Always": {FAILED, ERROR},
            "OnFailure": {FAILED},
            "OnError": {ERROR},
            "OnTransientError": set(),  # a local process has no transient Kubernetes errors
        }.get(policy)
        if allowed is None:
            raise ExecutorError(f"unknown retryPolicy {policy!r}")
        if attempt.phase not in allowed:
            return False
        if "expression" in strategy:
            return bool(evaluate(strategy["expression"], _nest(scope)))
        return True

    def _backoff_delay(self, backoff: dict, attempt_no: int) -> float:
        if not backoff:
            return 0.0
        duration = _seconds(str(backoff.get("duration", "0")))
        factor = float(backoff.get("factor", 1))
        delay = duration * factor**attempt_no
        if "cap" in backoff:
            delay = min(delay, _seconds(backoff["cap"]))
        return delay * self.backoff_scale

    def _attempt(self, template: dict, outputs_spec: dict, node: Node, scope: dict) -> Attempt:
        """One pod: fresh emptyDirs, env from Secrets/ConfigMaps, the process, then its outputs."""
        container = template.get("container") or template.get("script")
        pod_dir = Path(tempfile.mkdtemp(prefix=f"{node.name.replace('.', '_')}-", dir=self.workdir))
        try:
            mounts = self._mounts(template, container, pod_dir)
            env = self._env(container, mounts, node)
            argv = [*container.get("command", []), *container.get("args", [])]
            if "script" in template:
                script_file = pod_dir / "script"
                script_file.write_text(container["source"])
                argv = [*container.get("command", ["python"]), str(script_file)]
            if not argv:
                raise ExecutorError(
                    f"{node.name}: container has no command (image entrypoint is unknown locally)"
                )
            argv = [_localize(a, mounts) for a in argv]
            executable = shutil.which(argv[0], path=env.get("PATH", os.defpath))
            if executable is None:
                raise ExecutorError(f"{node.name}: command {argv[0]!r} not found on PATH {env.get('PATH')!r}")
        except ExecutorError as exc:
            return Attempt([], None, ERROR, str(exc), "", "", 0.0)
        cwd = _localize(container.get("workingDir", ""), mounts) or str(pod_dir)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        timeout = float(template["activeDeadlineSeconds"]) if "activeDeadlineSeconds" in template else None
        self.log(f"  {node.name}: $ {' '.join(argv)}")
        started = time.monotonic()
        proc = subprocess.Popen(
            [executable, *argv[1:]],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            return Attempt(
                argv,
                None,
                FAILED,
                f"activeDeadlineSeconds {timeout:g} exceeded",
                stdout,
                stderr,
                time.monotonic() - started,
            )
        seconds = time.monotonic() - started
        for line in (stdout + stderr).splitlines()[-15:]:
            self.log(f"    | {line}")
        if proc.returncode != 0:
            return Attempt(
                argv, proc.returncode, FAILED, f"exit code {proc.returncode}", stdout, stderr, seconds
            )
        node.result = stdout.rstrip("\n")
        node.outputs = {}
        for p in outputs_spec.get("parameters", []):
            source = p.get("valueFrom", {})
            if "path" in source:
                file = Path(_localize(source["path"], mounts))
                if file.is_file():
                    node.outputs[p["name"]] = file.read_text().rstrip("\n")
                elif "default" in source:
                    node.outputs[p["name"]] = source["default"]
                else:
                    return Attempt(
                        argv,
                        0,
                        ERROR,
                        f"output {p['name']!r}: {source['path']} does not exist",
                        stdout,
                        stderr,
                        seconds,
                    )
            elif "value" in p:
                node.outputs[p["name"]] = p["value"]
            else:
                raise UnsupportedFeature(f"container output {p['name']!r} from {sorted(source)}")
        if outputs_spec.get("artifacts"):
            raise UnsupportedFeature("output artifacts")
        return Attempt(argv, 0, SUCCEEDED, "", stdout, stderr, seconds)

    def _mounts(self, template: dict, container: dict, pod_dir: Path) -> list[tuple[str, str]]:
        """(mountPath, local dir) pairs, longest first; volumes from the template, then the workflow."""
        volumes = {v["name"]: v for v in self._run_state["spec"].get("volumes", [])}
        volumes.update({v["name"]: v for v in template.get("volumes", [])})
        mounts = []
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ExecutorError(
                    f"volume {mount['name']!r} is mounted but not declared by the template or workflow"
                )
            if "emptyDir" in volume:
                local = pod_dir / "volumes" / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in self.claims:
                    raise ExecutorError(f"PersistentVolumeClaim {claim!r} is not mapped to a local directory")
                local = self.claims[claim]
            else:
                raise UnsupportedFeature(f"volume {mount['name']!r} of type {sorted(set(volume) - {'name'})}")
            if mount.get("subPath"):
                local = local / mount["subPath"]
            mounts.append((mount["mountPath"].rstrip("/") or "/", str(local)))
        return sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    def _env(self, container: dict, mounts: list[tuple[str, str]], node: Node) -> dict[str, str]:
        env = {k: os.environ[k] for k in self.passthrough if k in os.environ}
        if self.path:
            env["PATH"] = os.pathsep.join([*self.path, env.get("PATH", os.defpath)])
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            for kind, store in (("configMapRef", self.config_maps), ("secretRef", self.secrets)):
                if kind in source:
                    ref = source[kind]
                    if ref["name"] not in store:
                        if ref.get("optional"):
                            continue
                        raise ExecutorError(f"{kind} {ref['name']!r} does not exist")
                    env.update({prefix + k: v for k, v in store[ref["name"]].items()})
        for var in container.get("env", []):
            if "value" in var:  # a path written in the YAML is a container path: localize it
                value = _localize(var["value"], mounts)
            elif "valueFrom" in var:  # values the caller supplied for Secrets/ConfigMaps are local already
                value = self._env_value(var["name"], var["valueFrom"])
                if value is None:
                    continue
            else:
                value = ""
            env[var["name"]] = value
        node.env = {k: v for k, v in env.items() if k not in self.passthrough}
        return env

    def _env_value(self, name: str, source: dict) -> str | None:
        for kind, store in (("secretKeyRef", self.secrets), ("configMapKeyRef", self.config_maps)):
            if kind in source:
                ref = source[kind]
                value = store.get(ref["name"], {}).get(ref["key"])
                if value is None:
                    if ref.get("optional"):
                        return None
                    raise ExecutorError(f"env {name}: {kind} {ref['name']}/{ref['key']} does not exist")
                return value
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            values = {
                "metadata.namespace": self._run_state["namespace"],
                "metadata.name": self._run_state["name"],
            }
            if path not in values:
                raise UnsupportedFeature(f"env {name}: fieldRef {path}")
            return values[path]
        raise UnsupportedFeature(f"env {name}: valueFrom {sorted(source)}")


class _Locks:
    """Hold several named mutexes (sorted, so two runs never deadlock)."""

    def __init__(self, names: list[str]) -> None:
        self.locks = [_mutex(n) for n in sorted(set(names))]

    def __enter__(self) -> None:
        for lock in self.locks:
            lock.acquire()

    def __exit__(self, *exc) -> None:
        for lock in reversed(self.locks):
            lock.release()


def _localize(value: str, mounts: list[tuple[str, str]]) -> str:
    """Rewrite a container path under a mount to the local directory standing in for it."""
    for mount_path, local in mounts:
        if value == mount_path:
            return local
        if value.startswith(mount_path + "/"):
            return local + value[len(mount_path) :]
    return value


def _seconds(duration: str) -> float:
    """Argo durations: ``30``, ``30s``, ``2m``, ``1h``, ``1h30m``."""
    if re.fullmatch(r"\d+(\.\d+)?", duration):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ExecutorError(f"cannot read duration {duration!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


# ---------------------------------------------------------------- command line


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _nested(items: list[str], what: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in _pairs(items, what).items():
        name, sep, sub = key.partition("/")
        if not sep:
            raise SystemExit(f"{what} must look like NAME/KEY=VALUE, got {key!r}")
        out.setdefault(name, {})[sub] = value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="object to run, e.g. rakuten-train, drift-check")
    parser.add_argument(
        "--from-dir", type=Path, default=None, help="rendered YAML directory (default: the chart's)"
    )
    parser.add_argument("-p", "--parameter", action="append", default=[], help="KEY=VALUE workflow parameter")
    parser.add_argument("--secret", action="append", default=[], help="NAME/KEY=VALUE stand-in Secret entry")
    parser.add_argument(
        "--config-map", action="append", default=[], help="NAME/KEY=VALUE stand-in ConfigMap entry"
    )
    parser.add_argument("--claim", action="append", default=[], help="CLAIM=DIR local directory for a PVC")
    parser.add_argument("--no-backoff", action="store_true", help="retry without waiting")


def main_from_args(args: argparse.Namespace) -> int:
    from workflows.render import OUTPUT_DIR

    executor = LocalExecutor(
        load_objects([args.from_dir or OUTPUT_DIR]),
        secrets=_nested(args.secret, "--secret"),
        config_maps=_nested(args.config_map, "--config-map"),
        claims=_pairs(args.claim, "--claim"),
        path=[Path(sys.executable).parent],
        backoff_scale=0.0 if args.no_backoff else 1.0,
    )
    run = executor.submit(args.name, _pairs(args.parameter, "-p"))
    print(run.summary())
    if run.outputs:
        print(json.dumps(run.outputs, indent=2))
    return 0 if run.phase == SUCCEEDED else 1


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(cli)
    sys.exit(main_from_args(cli.parse_args()))
