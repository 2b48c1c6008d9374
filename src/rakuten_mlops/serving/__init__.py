"""The prediction API: FastAPI app factory, model server with hot reload, metrics, prediction log.

``create_app(settings)`` builds the ASGI app; ``rakuten-mlops serve`` runs it under uvicorn.
Imports are lazy so that ``rakuten-mlops --help`` does not load FastAPI or MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rakuten_mlops.serving.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from rakuten_mlops.serving.app import create_app

        return create_app
    raise AttributeError(name)
