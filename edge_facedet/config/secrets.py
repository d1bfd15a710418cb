"""Secrets in the config: `SecretSource` (file, environment, systemd credential or inline).

A secret is resolved only when it is needed (`reveal`), and its errors name where it comes
from, never what it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edge_facedet.config.base import StrictModel, resolve_path
from edge_facedet.config.errors import ConfigError
from edge_facedet.config.files import TextFileError, read_text_file

if TYPE_CHECKING:
    from collections.abc import Mapping

# Secrets are short; a bigger "password file" is a misconfiguration (or /dev/zero).
MAX_SECRET_BYTES: Final = 64 * 1024
# The shipped unit (systemd/edge-facedet.service) has `LoadCredential=edge-facedet:DIR`, and
# systemd names each file F of a loaded folder `edge-facedet_F`.
UNIT_CREDENTIALS_DIR: Final = Path("/etc/edge-facedet/credentials")
UNIT_CREDENTIAL_PREFIX: Final = "edge-facedet_"


class SecretSource(StrictModel):
    """Where a secret comes from. Exactly one of the fields is set."""

    # A password may legitimately begin or end with spaces: keep inline values verbatim.
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=False, allow_inf_nan=False
    )

    file: Path | None = Field(
        default=None,
        description="Read the secret from this file (one trailing newline removed); "
        "relative to the config file's directory.",
    )
    env: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Read the secret from this environment variable.",
    )
    credential: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.@-]+$",
        description="Read the secret from $CREDENTIALS_DIRECTORY/<name> (systemd LoadCredential=); "
        "edge-facedet_F is also found as F there, as in the folder the shipped unit loads.",
    )
    value: SecretStr | None = Field(
        default=None,
        description="The secret itself. Prefer file, env or credential: configs get copied.",
    )

    @model_validator(mode="before")
    @classmethod
    def _mapping_only(cls, data: Any) -> Any:
        # `password: hunter2` is the likely mistake; say what to write without echoing it.
        if isinstance(data, str | int | float | bool):
            raise PydanticCustomError(
                "secret_shape",
                "a secret is a mapping with one of file:, env:, credential: or value:, "
                "not a plain value",
            )
        return data

    @field_validator("file")
    @classmethod
    def _file_path(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(value, info)

    @field_validator("credential")
    @classmethod
    def _credential_name(cls, value: str | None) -> str | None:
        # The pattern admits "." and ".."; either would escape $CREDENTIALS_DIRECTORY.
        if value is not None and set(value) == {"."}:
            raise ValueError("credential name cannot be '.' or '..'")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        given = [
            name
            for name in ("file", "env", "credential", "value")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of file, env, credential, value"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def describe(self) -> str:
        """Where the secret comes from, for messages; never the secret itself."""
        if self.file is not None:
            return f"file {self.file}"
        if self.env is not None:
            return f"env {self.env}"
        if self.credential is not None:
            return f"credential {self.credential}"
        return "inline value"

    def reveal(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        credentials_dir: Path | None = None,
    ) -> str:
        """The secret. Raises `ConfigError` naming the source (never the content).

        `environ` defaults to the process environment; `credentials_dir` defaults to
        `$CREDENTIALS_DIRECTORY` from `environ` (systemd sets it for LoadCredential=).
        """
        env = os.environ if environ is None else environ
        if self.value is not None:
            secret = self.value.get_secret_value()
        elif self.env is not None:
            if self.env not in env:
                raise ConfigError(f"environment variable {self.env} is not set")
            secret = env[self.env]
        elif self.credential is not None:
            if credentials_dir is None:
                directory = env.get("CREDENTIALS_DIRECTORY")
                if not directory:
                    raise ConfigError(_no_credentials_directory(self.credential))
                credentials_dir = Path(directory)
            path = credential_file(credentials_dir, self.credential)
            secret = _read_secret_file(path, "credential")
        else:
            assert self.file is not None  # noqa: S101 - guaranteed by _exactly_one
            secret = _read_secret_file(self.file, "password file")
        if secret == "":
            raise ConfigError(f"{self.describe()}: the secret is empty")
        return secret


def credential_file(directory: Path, name: str) -> Path:
    """The file holding credential `name` in `directory` (`ConfigError` if neither form exists).

    `directory` is either systemd's `$CREDENTIALS_DIRECTORY`, where the credential is the file
    `name`, or the folder the unit loads (`check-config --credentials-dir`), where the unit's
    credential `edge-facedet_F` is the file F: so the check finds what the unit will.
    """
    exact = directory / name
    folder_name = name.removeprefix(UNIT_CREDENTIAL_PREFIX)
    # "." and ".." would name the folder or its parent, not a file in it.
    if folder_name == name or set(folder_name) <= {"."} or os.path.lexists(exact):
        return exact
    in_folder = directory / folder_name
    if not os.path.lexists(in_folder):
        raise ConfigError(
            f"credential {name}: neither {exact} nor {in_folder} (the unit's folder form) exists"
        )
    return in_folder


def _no_credentials_directory(name: str) -> str:
    # Outside the unit (a shell, `check-config` before a start) the variable is unset: say how
    # the unit provides the credential and how to check it from here.
    return (
        f"credential {name}: $CREDENTIALS_DIRECTORY is not set; the unit sets it "
        f"(LoadCredential=edge-facedet:{UNIT_CREDENTIALS_DIR} loads the file F there as "
        f"{UNIT_CREDENTIAL_PREFIX}F); to check from a shell: edge-facedet check-config "
        f"--credentials-dir {UNIT_CREDENTIALS_DIR} CONFIG"
    )


def _read_secret_file(path: Path, what: str) -> str:
    try:
        text = read_text_file(path, limit=MAX_SECRET_BYTES)
    except TextFileError as exc:
        raise ConfigError(f"{what} {path}: {exc}") from None
    # Editors and `echo` add one newline; anything else is part of the secret.
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text
