"""`rakuten-mlops operator run`: the kopf operator for ServedModel, in-process.

Registered in :mod:`rakuten_mlops.cli` as ``app.add_typer(operator_app, name="operator")``.
kopf and the handlers are imported inside the command so that ``--help`` stays fast.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

operator_app = typer.Typer(
    help="Kubernetes operator: roll the API to the production model.", no_args_is_help=True
)


@operator_app.command("run")
def run(
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", "-n", help="Namespace to serve (default: RAKUTEN_NAMESPACE)."),
    ] = None,
    liveness: Annotated[
        str | None,
        typer.Option("--liveness", help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz."),
    ] = None,
    peering: Annotated[
        str, typer.Option("--peering", help="KopfPeering object that keeps one instance active.")
    ] = "rakuten-mlops",
    priority: Annotated[int, typer.Option("--priority", help="Peering priority; the highest one runs.")] = 0,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="No peering (only when no other instance can run).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Watch ServedModels and roll their Deployments to the version behind the alias."""
    import kopf

    from rakuten_mlops.settings import get_settings

    settings = get_settings()
    typer.echo(settings.backends_line())
    ns = namespace or os.environ.get("RAKUTEN_NAMESPACE") or settings.namespace
    kopf.configure(verbose=verbose)
    import rakuten_operator.handlers  # noqa: F401  (registers the handlers with kopf)

    typer.echo(f"operator: namespace={ns} peering={'none' if standalone else peering} priority={priority}")
    kopf.run(
        namespaces=[ns],
        liveness_endpoint=liveness,
        standalone=True if standalone else None,
        peering_name=None if standalone else peering,
        priority=priority,
    )
