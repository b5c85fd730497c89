"""Request dependencies: settings, store, dispatcher from app state, and the bearer-key check."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from marionet.config import Settings
from marionet.errors import AuthenticationError
from marionet.tasks.models import ApiKey
from marionet.tasks.queue import Dispatcher
from marionet.tasks.store import Store

_bearer = HTTPBearer(auto_error=False, description="An API key made by `marionet keys create`.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


def base_url(request: Request) -> str:
    """Where clients reach us: MARIONET_PUBLIC_URL, else the URL of this request."""
    return request.app.state.settings.public_url or str(request.base_url)


def current_key(
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer), store: Store = Depends(get_store)
) -> ApiKey:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError(
            "Send your API key as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
            param="Authorization",
        )
    key = store.key_for_token(credentials.credentials)
    if key is None:
        raise AuthenticationError("This API key is not valid or was revoked.", param="Authorization")
    return key
