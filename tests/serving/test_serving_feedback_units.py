"""The feedback token setting and when ``POST /feedback`` exists (the app's own OpenAPI schema)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rakuten_mlops.serving.app import create_app
from rakuten_mlops.settings import Settings


@pytest.fixture(autouse=True)
def no_tokens_in_the_environment(monkeypatch):
    for name in ("RAKUTEN_ADMIN_TOKEN", "RAKUTEN_FEEDBACK_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_feedback_token_has_no_default_and_refuses_placeholders(tmp_path):
    assert Settings(home=tmp_path).feedback_token is None
    assert Settings(home=tmp_path, feedback_token="  ").feedback_token is None
    with pytest.raises(ValidationError, match="RAKUTEN_FEEDBACK_TOKEN is a placeholder"):
        Settings(home=tmp_path, feedback_token="changeme")
    with pytest.raises(ValidationError, match="RAKUTEN_ADMIN_TOKEN is a placeholder"):
        Settings(home=tmp_path, admin_token="secret")


@pytest.mark.parametrize(
    ("tokens", "feedback", "admin"),
    [
        ({}, False, False),
        ({"feedback_token": "f-0123456789abcdef"}, True, False),
        ({"admin_token": "a-0123456789abcdef"}, True, True),
    ],
    ids=["no-token", "feedback-token-only", "admin-token"],
)
def test_feedback_route_exists_with_either_token(tmp_path, tokens, feedback, admin):
    paths = create_app(Settings(home=tmp_path, **tokens), prediction_log=False).openapi()["paths"]
    assert ("/feedback" in paths, "/admin/reload" in paths) == (feedback, admin)
