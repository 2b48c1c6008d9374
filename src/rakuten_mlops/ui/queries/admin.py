"""The admin token check of the sidebar: this process's token, or the API's verdict."""

from __future__ import annotations

import hmac

from rakuten_mlops.settings import Settings
from rakuten_mlops.ui.api import APIError, PlatformAPI


def check_admin_token(settings: Settings, token: str | None) -> tuple[bool, str]:
    """(allowed, why): the token must equal this process's RAKUTEN_ADMIN_TOKEN, or be accepted by the API."""
    if not token:
        return False, "admin actions are locked: type the admin token in the sidebar"
    if settings.admin_token is not None:
        if hmac.compare_digest(token.encode(), settings.admin_token.get_secret_value().encode()):
            return True, "admin token accepted"
        return False, "wrong admin token"
    try:
        verdict = PlatformAPI(settings.api_url, token).admin_routes()
    except APIError as exc:
        return False, f"cannot check the token: RAKUTEN_ADMIN_TOKEN is not set here and {exc}"
    if verdict == "accepted":
        return True, "admin token accepted by the API"
    if verdict == "refused":
        return False, "wrong admin token (refused by the API)"
    return False, "the API has no admin routes (RAKUTEN_ADMIN_TOKEN unset there) and none is set here"
