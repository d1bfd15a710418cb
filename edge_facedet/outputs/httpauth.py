"""The HTTP endpoint's credentials check (config `metrics.auth`): basic auth or a bearer token.

The secrets are read once at start. A request's credentials are compared in constant time:
both sides are hashed first and the digests compared with `hmac.compare_digest`, so neither
the content nor the length of a secret shows in how long a refusal takes. A refusal is a 401
with the challenge a browser answers with its password prompt (basic) or, with a token only,
the bearer challenge (RFC 6750).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from edge_facedet.outputs.httpmessages import Request, Response

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from edge_facedet.config.httpauth import HttpAuthConfig

__all__ = ["HttpAuth"]

REALM = "edge-facedet"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@dataclass(frozen=True, slots=True, repr=False)
class HttpAuth:
    """Who may use the endpoint. `repr` is off: the digests stay out of logs and tracebacks."""

    basic: bytes | None
    """SHA-256 of `user:password` (UTF-8), or None: basic auth not accepted."""
    token: bytes | None
    """SHA-256 of the bearer token, or None: bearer not accepted."""
    protect_metrics: bool = True

    @classmethod
    def from_config(
        cls,
        config: HttpAuthConfig,
        *,
        environ: Mapping[str, str] | None = None,
        credentials_dir: Path | None = None,
    ) -> HttpAuth:
        """Reads the secrets (ConfigError naming the source, never the secret)."""
        basic = token = None
        if config.username is not None and config.password is not None:
            password = config.password.reveal(environ=environ, credentials_dir=credentials_dir)
            basic = _digest(f"{config.username}:{password}".encode())
        if config.token is not None:
            token = _digest(
                config.token.reveal(environ=environ, credentials_dir=credentials_dir).encode()
            )
        return cls(basic=basic, token=token, protect_metrics=config.protect_metrics)

    def allows(self, request: Request) -> bool:
        scheme, _, credentials = request.header("authorization").strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "basic" and self.basic is not None:
            try:
                given = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(_digest(given), self.basic)
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(_digest(credentials.encode("latin-1")), self.token)
        return False

    @property
    def refusal(self) -> Response:
        scheme = "Basic" if self.basic is not None else "Bearer"
        challenge = f'{scheme} realm="{REALM}"' + (', charset="UTF-8"' if scheme == "Basic" else "")
        return Response(
            status=HTTPStatus.UNAUTHORIZED,
            body=b"credentials required\n",
            headers=(("WWW-Authenticate", challenge), ("Cache-Control", "no-store")),
        )

    def guard(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """`handler`, answered only for requests with valid credentials (else 401)."""

        def guarded(request: Request) -> Response:
            if not self.allows(request):
                return self.refusal
            return handler(request)

        return guarded
