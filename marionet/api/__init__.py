"""HTTP API: routes, request/response schemas, error shapes."""

from marionet.api.app import create_app

__all__ = ["create_app"]
