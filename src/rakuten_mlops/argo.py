"""The one client of the Argo server's REST API, used by the API's retrain, the control room and
``python -m workflows submit``.

It reads its settings as the argo CLI does: ``ARGO_SERVER`` (``host:port`` means HTTPS unless
``ARGO_SECURE=false``; a full URL is used as is), ``ARGO_TOKEN`` (with or without ``Bearer``)
and ``ARGO_INSECURE_SKIP_VERIFY``. Every failure, unreachable server or refusal, is an
:class:`ArgoError` whose message names the server and its answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from rakuten_mlops.errors import PlatformError
from rakuten_mlops.settings import Settings

#: Where each installable kind lives in the REST API, and the key of its body in create/update.
OBJECT_PATHS = {
    "WorkflowTemplate": ("workflow-templates", "template"),
    "CronWorkflow": ("cron-workflows", "cronWorkflow"),
}


class ArgoError(PlatformError):
    """The Argo server is not configured, cannot be reached, or refused the request."""


def base_url(server: str, secure: bool = True) -> str:
    """``host:port`` -> ``https://host:port`` (``http://`` when not ``secure``); URLs unchanged."""
    server = server.rstrip("/")
    if "://" in server:
        return server
    return f"{'https' if secure else 'http'}://{server}"


@dataclass(frozen=True)
class ArgoServer:
    """One Argo server and the namespace its workflows run in."""

    url: str
    namespace: str
    token: str | None = None
    verify: bool = True
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 10.0) -> ArgoServer:
        if not settings.argo_server:
            raise ArgoError("ARGO_SERVER is not set")
        token = settings.argo_token.get_secret_value() if settings.argo_token is not None else None
        return cls(
            url=base_url(settings.argo_server, settings.argo_secure),
            namespace=settings.namespace,
            token=token,
            verify=not settings.argo_insecure_skip_verify,
            timeout=timeout,
        )

    # --- calls --------------------------------------------------------------------------------

    def version(self) -> str:
        """The server's version (its ``/api/v1/version``)."""
        return self._call("GET", "/api/v1/version", what="the version request").get("version", "?")

    def submit(
        self,
        kind: str,
        name: str,
        *,
        generate_name: str,
        labels: str | None = None,
        parameters: list[str] | None = None,
    ) -> dict[str, Any]:
        """Start a Workflow from the installed ``kind``/``name`` (``argo submit --from``); the Workflow."""
        options: dict[str, Any] = {"generateName": generate_name}
        if labels:
            options["labels"] = labels
        if parameters:
            options["parameters"] = parameters
        body = {
            "namespace": self.namespace,
            "resourceKind": kind,
            "resourceName": name,
            "submitOptions": options,
        }
        return self._call("POST", f"/api/v1/workflows/{self.namespace}/submit", body, what=f"{kind}/{name}")

    def workflow(self, name: str) -> dict[str, Any] | None:
        """The Workflow ``name``, or None when the server has no such Workflow."""
        return self._call("GET", f"/api/v1/workflows/{self.namespace}/{name}", what=f"Workflow {name}", missing_ok=True)  # fmt: skip

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create the WorkflowTemplate or CronWorkflow ``manifest``, or update it when installed."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        collection, key = OBJECT_PATHS[kind]
        path = f"/api/v1/{collection}/{self.namespace}"
        current = self._call("GET", f"{path}/{name}", what=f"{kind}/{name}", missing_ok=True)
        if current is None:
            self._call("POST", path, {key: manifest}, what=f"creating {kind}/{name}")
            return
        version = current.get("metadata", {}).get("resourceVersion")
        manifest = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": version}}
        self._call("PUT", f"{path}/{name}", {key: manifest}, what=f"updating {kind}/{name}")

    def _call(
        self, method: str, path: str, body: dict | None = None, *, what: str, missing_ok: bool = False
    ) -> Any:
        headers = {"Accept": "application/json"}
        if self.token and self.token.strip():
            token = self.token.strip()
            headers["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
        try:
            with httpx.Client(
                base_url=self.url, headers=headers, timeout=self.timeout, verify=self.verify
            ) as http:
                response = http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ArgoError(f"cannot reach the Argo server at {self.url}: {exc}") from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 300:
            raise ArgoError(
                f"the Argo server at {self.url} refused {what} ({response.status_code}): {response.text[:300]}"
            )
        return response.json()
