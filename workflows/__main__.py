"""``python -m workflows render | check | submit NAME | run-local NAME | list``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from workflows import render
from workflows.local_executor import SUCCEEDED, ExecutorError, LocalExecutor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflows", description="Argo objects of rakuten-mlops")
    sub = parser.add_subparsers(dest="command", required=True)

    p_render = sub.add_parser("render", help="write the YAML into charts/rakuten-mlops/files/workflows")
    p_render.add_argument("--output-dir", type=Path, default=render.OUTPUT_DIR)

    sub.add_parser("check", help="exit 1 if the committed YAML differs from what the code renders")
    sub.add_parser("list", help="names, kinds and schedules")

    p_submit = sub.add_parser("submit", help="start a run on an Argo server (ARGO_SERVER, ARGO_TOKEN)")
    p_submit.add_argument("name")
    p_submit.add_argument("-p", "--parameter", action="append", default=[], help="KEY=VALUE")
    p_submit.add_argument("--server", default=None, help="Argo server URL (default: $ARGO_SERVER)")
    p_submit.add_argument("--namespace", default=None, help="default: $ARGO_NAMESPACE or rakuten")
    p_submit.add_argument("--apply", action="store_true", help="create/update the object first")
    p_submit.add_argument("--insecure", action="store_true", help="skip TLS verification (self-signed)")

    p_local = sub.add_parser("run-local", help="run the rendered YAML as local processes")
    add_run_local_arguments(p_local)

    args = parser.parse_args(argv)
    if args.command == "render":
        for path in render.write(args.output_dir):
            print(f"wrote {path}")
        return 0
    if args.command == "check":
        stale = render.stale_files()
        for name in stale:
            print(f"{name} differs from the code: run `make render-workflows`", file=sys.stderr)
        return 1 if stale else 0
    if args.command == "list":
        for obj in render.build_all().values():
            doc = obj.to_dict()
            schedules = " ".join(doc["spec"].get("schedules", []))
            print(f"{doc['metadata']['name']:<24} {doc['kind']:<18} {schedules}")
        return 0
    if args.command == "submit":
        from workflows.submit import SubmitError, submit

        try:
            name = submit(
                args.name,
                _pairs(args.parameter, "-p"),
                server=args.server,
                namespace=args.namespace,
                apply=args.apply,
                verify_ssl=not args.insecure,
            )
        except SubmitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"submitted {name}")
        return 0
    return run_local(args)


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


def add_run_local_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="object to run, e.g. rakuten-train, drift-check")
    parser.add_argument("--from-dir", type=Path, default=None, help="rendered YAML (default: the chart's)")
    parser.add_argument("-p", "--parameter", action="append", default=[], help="KEY=VALUE workflow parameter")
    parser.add_argument("--secret", action="append", default=[], help="NAME/KEY=VALUE stand-in Secret entry")
    parser.add_argument(
        "--config-map", action="append", default=[], help="NAME/KEY=VALUE stand-in ConfigMap entry"
    )
    parser.add_argument("--claim", action="append", default=[], help="CLAIM=DIR local directory for a PVC")


def load_objects(path: Path) -> list[dict]:
    """Every YAML document of a file or of a directory's ``*.yaml`` files."""
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return [doc for file in files for doc in yaml.safe_load_all(file.read_text()) if doc]


def run_local(args: argparse.Namespace) -> int:
    executor = LocalExecutor(
        load_objects(args.from_dir or render.OUTPUT_DIR),
        secrets=_nested(args.secret, "--secret"),
        config_maps=_nested(args.config_map, "--config-map"),
        claims=_pairs(args.claim, "--claim"),
        path=[Path(sys.executable).parent],
    )
    try:
        run = executor.submit(args.name, _pairs(args.parameter, "-p"))
    except ExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(run.summary())
    if run.outputs:
        print(json.dumps(run.outputs, indent=2))
    return 0 if run.phase == SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
