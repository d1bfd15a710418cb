"""Keeping credentials out of everything the service shows: logs, errors, metrics, payloads."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

_REDACTED = "***"
# userinfo in any scheme://user:pass@host form, also inside longer messages (FFmpeg errors
# echo the URL they failed on).
_USERINFO_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s]+)@")


def redact_url(url: str) -> str:
    """The URL with any password (and the user name) replaced, safe to log or publish."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{_REDACTED}:{_REDACTED}@{host}"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str, *secrets: str) -> str:
    """Text with URL credentials and each given secret value replaced."""
    text = _USERINFO_IN_TEXT.sub(rf"\g<scheme>{_REDACTED}:{_REDACTED}@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """A log formatter that scrubs URL credentials and known secret values from every line.

    Defence in depth: code already logs redacted URLs, but an exception text from a library
    (FFmpeg, paho, ssl) may quote what it was given.
    """

    def __init__(self, fmt: str, *, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), *self._secrets)
