"""The feedback token of ``POST /feedback`` in the chart: generated (no default), kept on upgrade
like the admin token, replaced by an existing Secret, absent when disabled, wired into the API."""

from __future__ import annotations

import base64

import pytest

from tests.packaging.chart_support import RELEASE, by_kind, one
from tests.packaging.test_secrets_kept import FakeApiServer, render_against

API = f"{RELEASE}-rakuten-mlops-api"
FEEDBACK = f"{RELEASE}-rakuten-mlops-feedback"


def api_env(docs) -> dict[str, dict]:
    container = one(docs, "Deployment", API)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def token(docs) -> str:
    return base64.b64decode(one(docs, "Secret", FEEDBACK)["data"]["token"]).decode()


def test_feedback_token_is_generated_per_install_and_given_to_the_api(render):
    first, second = render.docs(), render.docs("default", "1.31", ("commonLabels.render=second",))
    assert len(token(first)) == 48 and token(first) != token(second), "a default token"
    ref = api_env(first)["RAKUTEN_FEEDBACK_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": FEEDBACK, "key": "token"}
    assert (
        token(first)
        != base64.b64decode(one(first, "Secret", f"{RELEASE}-rakuten-mlops-admin")["data"]["token"]).decode()
    )


def test_existing_secret_or_disabled_feedback_token(render):
    existing = render.docs("default", "1.31", ("api.feedback.existingSecret=my-feedback",))
    assert FEEDBACK not in {s["metadata"]["name"] for s in by_kind(existing, "Secret")}
    assert api_env(existing)["RAKUTEN_FEEDBACK_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "my-feedback"
    disabled = render.docs("default", "1.31", ("api.feedback.enabled=false",))
    assert FEEDBACK not in {s["metadata"]["name"] for s in by_kind(disabled, "Secret")}
    assert "RAKUTEN_FEEDBACK_TOKEN" not in api_env(disabled)


PREVIOUS = {FEEDBACK: {"token": "previous-feedback-token-0123456789abcdefghijklm"}}


@pytest.fixture
def cluster_with_previous_token():
    server = FakeApiServer(PREVIOUS)
    with server.http:
        yield server


def test_upgrade_keeps_the_feedback_token(helm, cluster_with_previous_token, tmp_path):
    """Rendered against a minimal API server (stand-in) holding the previous install's Secret."""
    secrets = render_against(helm, cluster_with_previous_token, tmp_path)
    assert secrets[FEEDBACK] == PREVIOUS[FEEDBACK]
    assert f"/api/v1/namespaces/rakuten/secrets/{FEEDBACK}" in cluster_with_previous_token.requests
