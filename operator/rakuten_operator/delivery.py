"""Plain pieces of a progressive rollout: the canary Deployment and its replica count, no I/O.

The canary is a copy of the stable Deployment pinned to the candidate. Its pods carry the stable
pods' labels, so the Service that selects the stable pods sends them their share of the traffic;
the share follows the replica ratio (``canary / (canary + stable)``). Its own selector adds
``mlops.rakuten.io/track: canary``, so the two Deployments never count each other's pods
(ReplicaSets own their pods through ``pod-template-hash`` and owner references). Gateway API or
Istio weights would make the split exact instead of a replica ratio.
"""

from __future__ import annotations

import copy
from typing import Any

from rakuten_operator.rollout import pin_patch

TRACK_LABEL = "mlops.rakuten.io/track"
CANARY_SUFFIX = "-canary"


def canary_name(deployment: str) -> str:
    return f"{deployment}{CANARY_SUFFIX}"


def canary_replicas(stable_replicas: int, percent: int) -> int:
    """Canary replicas whose share of ``stable + canary`` is closest to ``percent`` (at least 1)."""
    stable = max(int(stable_replicas), 1)
    return max(1, round(stable * percent / (100 - percent)))


def traffic_share(stable_replicas: int, canary: int) -> float:
    return canary / (max(int(stable_replicas), 0) + canary) if canary else 0.0


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_patch(target[key], value)
        else:
            target[key] = value
    return target


def canary_deployment(
    stable: dict[str, Any],
    container: str,
    version: str,
    replicas: int,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The canary Deployment for ``stable`` (a Deployment as the API returns it), pinned to ``version``."""
    meta = stable.get("metadata", {})
    pinned = _merge_patch(
        copy.deepcopy(stable.get("spec", {})), pin_patch(stable, container, version)["spec"]
    )
    selector = pinned.setdefault("selector", {}).setdefault("matchLabels", {})
    selector[TRACK_LABEL] = "canary"
    template_meta = pinned.setdefault("template", {}).setdefault("metadata", {})
    template_meta.setdefault("labels", {})[TRACK_LABEL] = "canary"
    pinned["replicas"] = replicas
    pinned.pop("paused", None)
    labels = {**(meta.get("labels") or {}), TRACK_LABEL: "canary"}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": canary_name(meta.get("name", "")),
            "labels": labels,
            "annotations": {"mlops.rakuten.io/canary-of": meta.get("name", "")},
        },
        "spec": pinned,
    }
    if owner and owner.get("uid"):
        body["metadata"]["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["name"],
                "uid": owner["uid"],
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    return body
