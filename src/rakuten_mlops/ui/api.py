"""A small HTTP client of the prediction API (``RAKUTEN_API_URL``): predict, model, health, admin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class APIError(RuntimeError):
    """The API could not be reached or answered with an error; the message says which and why."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


@dataclass
class PlatformAPI:
    """The prediction API at ``base_url``; ``token`` is the admin bearer token (admin routes only)."""

    base_url: str
    token: str | None = None
    timeout: httpx.Timeout | float = 10.0

    def _request(self, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if admin:
            if not self.token:
                raise APIError("this action needs the admin token (type it in the sidebar)")
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base_url.rstrip("/") + path
        try:
            with httpx.Client(timeout=self.timeout) as client:
                return client.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise APIError(
                f"cannot reach the API at {self.base_url} ({exc.__class__.__name__}: {exc})"
            ) from exc

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise APIError(_error_text(response), response.status_code)
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/health"))

    def ready(self) -> dict[str, Any]:
        """``/ready`` body; a 503 (no model loaded yet) is an answer here, not an error."""
        response = self._request("GET", "/ready")
        if response.status_code in (200, 503):
            return response.json()
        raise APIError(_error_text(response), response.status_code)

    def model(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/model"))

    def predict(
        self, designation: str, description: str = "", k: int = 5, explain: bool = False
    ) -> dict[str, Any]:
        body = {"designation": designation, "description": description or None}
        params: dict[str, Any] = {"k": k, "explain": "true"} if explain else {"k": k}
        return self._json(self._request("POST", "/predict", params=params, json=body))

    def retrain(self) -> dict[str, Any]:
        return self._json(self._request("POST", "/admin/retrain", admin=True))

    def retrain_status(self, job_id: str) -> dict[str, Any]:
        return self._json(self._request("GET", f"/admin/retrain/{job_id}", admin=True))

    def rollback(self, to: str | None, reason: str) -> dict[str, Any]:
        return self._json(
            self._request("POST", "/admin/rollback", admin=True, json={"to": to, "reason": reason})
        )

    def reload(self) -> dict[str, Any]:
        return self._json(self._request("POST", "/admin/reload", admin=True, json={"force": False}))

    def admin_routes(self) -> str:
        """``"accepted"``, ``"refused"`` or ``"off"``: how the API treats this token.

        Asks for a job id that cannot exist: 404 "no retraining job" means the token passed,
        401 means it did not, a bare 404 means the admin routes are not mounted.
        """
        response = self._request("GET", "/admin/retrain/ui-token-check", admin=True)
        if response.status_code == 401:
            return "refused"
        if response.status_code == 404 and "no retraining job" in response.text:
            return "accepted"
        if response.status_code == 404:
            return "off"
        raise APIError(_error_text(response), response.status_code)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = body.get("error") or body.get("detail") or response.text
    except (ValueError, AttributeError):
        detail = response.text
    if isinstance(detail, list):  # pydantic validation errors
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return f"API answered {response.status_code}: {str(detail)[:300]}"
