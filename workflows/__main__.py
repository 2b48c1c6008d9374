"""``python -m workflows render | check | submit NAME | run-local NAME | list``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflows import local_executor, render


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
    local_executor.add_arguments(p_local)

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
                local_executor._pairs(args.parameter, "-p"),
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
    return local_executor.main_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
