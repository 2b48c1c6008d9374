"""An emulated Kubernetes API server (kmock's KubernetesEmulator) served on a loopback port.

No Kubernetes cluster can run on this machine (no container runtime for nodes, no network
beyond the package registries), so the operator's integration tests talk to kmock's
in-memory emulator over real HTTP instead. kmock stores objects, serves list/watch/get,
create, merge-patch and delete; the few API-server behaviours the operator relies on and
kmock leaves out are added here, each as the real API server does it:

- ``metadata.generateName`` gets a random suffix (kopf posts Events that way; without it
  kmock stores every Event under the name ``None`` and refuses the second one);
- a new object gets its URL's namespace in ``metadata.namespace``, a ``uid``, a
  ``creationTimestamp`` and ``generation: 1``;
- every change sets a new ``metadata.resourceVersion`` and a merge patch that names an
  outdated one is refused (kopf's JSON patches start with a ``test`` of it);
- a change to an object's ``spec`` bumps ``metadata.generation`` (the rollout watch
  compares it with the Deployment's ``status.observedGeneration``);
- a list carries the current ``resourceVersion`` and a watch from it replays only what
  changed since (kmock replays every object, so kopf saw stale states after its patches).

The test plays the Deployment controller: it writes ``status`` itself.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import uuid
from typing import Any

import aiohttp.web
import httpx
import kmock

SERVEDMODELS = "mlops.rakuten.io/v1alpha1/servedmodels"
DEPLOYMENTS = "apps/v1/deployments"
EVENTS = "v1/events"
PEERINGS = "kopf.dev/v1/kopfpeerings"


class RakutenEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API-server behaviours listed in the module docstring."""

    _versions = itertools.count(1000)
    _last_version = 999

    async def _handle(self, request: kmock.Request):  # type: ignore[override]
        resource = request.resource
        if resource is not None and request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("generation", 1)
            meta.setdefault(
                "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            meta["resourceVersion"] = self._next_version()
        elif resource is not None and request.action == kmock.action.UPDATE and request.name:
            key = (resource, request.namespace, request.name)
            stored = self.objects[key] if key in self.objects and not self.objects[key].deleted else None
            refusal = self._prepare_update(request, dict(stored.get("metadata", {}))) if stored else None
            if refusal is not None:
                return aiohttp.web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "code": refusal[0],
                        "reason": refusal[1],
                        "message": refusal[2],
                    },
                    status=refusal[0],
                )
        return await super()._handle(request)

    def _prepare_update(self, request: kmock.Request, stored_meta: dict[str, Any]) -> tuple | None:
        """Stamp an update with a new resourceVersion, or refuse it as the API server would.

        Returns None to go on, or (HTTP code, reason, message) when the update names an
        outdated resourceVersion: 422 for a JSON patch whose ``test`` op fails, 409 for a
        merge patch (optimistic concurrency).
        """
        current = stored_meta.get("resourceVersion")
        new_version = self._next_version()
        if isinstance(request.data, list):  # JSON patch (kopf's, with a "test" op first)
            for op in request.data:
                if (
                    op.get("op") == "test"
                    and op.get("path") == "/metadata/resourceVersion"
                    and op.get("value") != current
                ):
                    return 422, "Invalid", f"test failed: resourceVersion is {current}, not {op.get('value')}"
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": new_version})
            return None
        if not isinstance(request.data, dict):
            return None
        meta = request.data.setdefault("metadata", {})
        expected = meta.get("resourceVersion")
        if expected is not None and expected != current:
            return (
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            )
        meta["resourceVersion"] = new_version
        if "spec" in request.data and not request.subresource:
            meta["generation"] = int(stored_meta.get("generation", 1)) + 1
        return None

    def _next_version(self) -> str:
        self._last_version = next(self._versions)
        return str(self._last_version)

    async def _serve_list(self, request: kmock.Request):  # type: ignore[override]
        payload = await super()._serve_list(request)
        payload["metadata"]["resourceVersion"] = str(self._last_version)
        return payload

    async def _serve_watch(self, request: kmock.Request):  # type: ignore[override]
        """A watch from ``?resourceVersion=N`` replays only objects changed after N.

        kmock replays every object as ADDED when a watch starts; after a list, kopf then sees
        states older than the ones it has just patched, and waits for a change that never comes.
        """
        since = request.params.get("resourceVersion", "")
        if not since.isdigit():
            async for event in super()._serve_watch(request):
                yield event
            return
        yield b""
        async with self._lock:
            objs = self._KubernetesEmulator__get_objs(request, strict=False)
            events = [
                {"type": "MODIFIED", "object": obj.raw}
                for obj in objs
                if not obj.deleted and int(obj.get("metadata", {}).get("resourceVersion", "0")) > int(since)
            ]
        for event in events:
            yield event
        async for event in self._buses[request.resource]:
            meta = event.get("object", {}).get("metadata", {})
            if self._KubernetesEmulator__check(
                request, request.resource, meta.get("namespace"), meta.get("name"), strict=False
            ):
                yield event


class EmulatedApiServer:
    """Runs the emulator in a background thread with its own event loop; HTTP helpers for tests."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.emulator: RakutenEmulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kmock-emulator", daemon=True)
        self.http = httpx.Client(base_url=self.url, timeout=10)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> EmulatedApiServer:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the emulated API server did not start within 20 s")
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.http.close()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        emulator = RakutenEmulator()
        emulator.resources.load_bundled()
        emulator.resources[SERVEDMODELS] = kmock.ResourceInfo(
            kind="ServedModel",
            singular="servedmodel",
            namespaced=True,
            shortnames={"sm"},
            verbs={"get", "list", "watch", "patch", "create", "delete", "update"},
            subresources={"status"},
        )
        emulator.resources[PEERINGS] = kmock.ResourceInfo(
            kind="KopfPeering",
            singular="kopfpeering",
            namespaced=True,
            verbs={"get", "list", "watch", "patch", "create"},
        )
        self.emulator = emulator
        async with emulator, kmock.Server(emulator, host="127.0.0.1", port=self.port):
            self._ready.set()
            await self._stop.wait()

    # -- HTTP helpers (what kubectl would do) ------------------------------------------------
    @staticmethod
    def path(resource: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        group_version, plural = resource.rsplit("/", 1)
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    def create(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        rsp = self.http.post(self.path(resource, namespace), json=body)
        rsp.raise_for_status()
        return rsp.json()

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        rsp = self.http.get(self.path(resource, namespace, name))
        if rsp.status_code == 404:
            return None
        rsp.raise_for_status()
        return rsp.json()

    def patch(
        self, resource: str, namespace: str, name: str, body: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        rsp = self.http.patch(
            self.path(resource, namespace, name, subresource),
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        rsp.raise_for_status()
        return rsp.json()

    def list(self, resource: str, namespace: str) -> list[dict[str, Any]]:
        rsp = self.http.get(self.path(resource, namespace))
        rsp.raise_for_status()
        return rsp.json()["items"]

    def history(self, resource: str, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every stored version of one object, oldest first (what the API server saw)."""
        assert self.emulator is not None
        obj = self.emulator.objects[resource, namespace, name]
        return [dict(version.raw) for version in obj.history if version is not None]

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulated", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulated-token"}}],
            "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}}],
            "current-context": "emulated",
        }
