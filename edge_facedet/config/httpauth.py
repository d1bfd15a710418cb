"""The HTTP endpoint's optional password (`metrics.auth`): basic auth, a bearer token, or both.

The endpoint binds to loopback by default, where the host's own users are trusted. Bound to
another address it serves the web page, which shows people where a camera's images are on;
`auth` then protects every path but `/healthz` (a load balancer's or systemd's probe must
not need a secret), and `/metrics` too unless `protect_metrics` is off (a Prometheus that
cannot send credentials). Both secrets come from a `SecretSource`, never from the file.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from edge_facedet.config.base import CONTROL_CHARS, StrictModel
from edge_facedet.config.errors import field_error
from edge_facedet.config.secrets import SecretSource


class HttpAuthConfig(StrictModel):
    """Credentials the HTTP endpoint asks for: `username` + `password` (HTTP basic, what a
    browser prompts for), `token` (`Authorization: Bearer`, for scripts), or both."""

    username: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="HTTP basic auth user name (no ':'); needs password.",
    )
    password: SecretSource | None = Field(
        default=None, description="HTTP basic auth password source (file, env, credential, value)."
    )
    token: SecretSource | None = Field(
        default=None,
        description="Bearer token source (file, env, credential, value): "
        "`Authorization: Bearer <token>`.",
    )
    protect_metrics: bool = Field(
        default=True,
        description="Ask for the credentials on /metrics too; false leaves /metrics open "
        "(for a Prometheus without credentials). /healthz is always open.",
    )

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        # RFC 7617: the user name ends at the first colon; control characters only hide things.
        if value is not None and (":" in value or CONTROL_CHARS.search(value)):
            raise ValueError("username cannot contain ':' or control characters")
        return value

    @model_validator(mode="after")
    def _check(self) -> HttpAuthConfig:
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise field_error(missing, "username and password go together (HTTP basic auth)")
        if self.password is None and self.token is None:
            raise field_error("token", "set username and password, or token, or both")
        return self
