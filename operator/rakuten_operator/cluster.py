"""Kubernetes adapter: read and pin the serving Deployment, write the ServedModel's status.

Uses the official ``kubernetes`` client (in-cluster credentials, else the kubeconfig) and
returns plain dicts, the same shape kopf hands to the handlers.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from rakuten_operator import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"


class DeploymentNotFound(LookupError):
    """The Deployment named in spec.deployment does not exist in the ServedModel's namespace."""


class ClusterUnavailable(RuntimeError):
    """The API server failed or refused a write that may succeed later (outage, 5xx, 409 conflict)."""


@functools.lru_cache(maxsize=1)
def _api_client():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # KUBECONFIG as it is now: the library's default path was read once, when it was imported
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


def _raise_classified(exc: Exception, what: str) -> None:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        raise ClusterUnavailable(f"{what}: HTTP {exc.status} {exc.reason}") from exc
    raise ClusterUnavailable(f"{what}: {exc.__class__.__name__}: {exc}") from exc


class Cluster:
    """The API calls the operator makes on one namespace."""

    def __init__(self, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        api = _api_client()
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def get_deployment(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            rsp = self.apps.read_namespaced_deployment(name, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                raise DeploymentNotFound(
                    f"Deployment {name!r} not found in namespace {self.namespace!r}: "
                    "create it or fix spec.deployment"
                ) from exc
            _raise_classified(exc, f"reading Deployment {name}")
        except Exception as exc:
            _raise_classified(exc, f"reading Deployment {name}")
        return json.loads(rsp.data)

    def patch_deployment(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            rsp = self.apps.patch_namespaced_deployment(
                name, self.namespace, patch, _content_type=MERGE_PATCH, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                raise DeploymentNotFound(f"Deployment {name!r} disappeared from {self.namespace!r}") from exc
            _raise_classified(exc, f"patching Deployment {name}")
        except Exception as exc:
            _raise_classified(exc, f"patching Deployment {name}")
        return json.loads(rsp.data)

    def find_deployment(self, name: str) -> dict[str, Any] | None:
        """The Deployment, or None when it does not exist."""
        try:
            return self.get_deployment(name)
        except DeploymentNotFound:
            return None

    def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            rsp = self.apps.create_namespaced_deployment(self.namespace, body, _preload_content=False)
        except Exception as exc:
            _raise_classified(exc, f"creating Deployment {body['metadata']['name']}")
        return json.loads(rsp.data)

    def delete_deployment(self, name: str) -> bool:
        """Delete the Deployment (its pods go with it); False when it did not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.apps.delete_namespaced_deployment(name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            _raise_classified(exc, f"deleting Deployment {name}")
        except Exception as exc:
            _raise_classified(exc, f"deleting Deployment {name}")
        return True

    def patch_status(self, name: str, patch: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, name, patch, _content_type=MERGE_PATCH
            )
        except Exception as exc:
            _raise_classified(exc, f"writing status of ServedModel {name}")
