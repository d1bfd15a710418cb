"""Keeping credentials out of everything the service shows: logs, errors, metrics, payloads.

Two rules, documented in the README's security section:

* **Structure.** Wherever a URL is shown, its user information (`user:password@`) and the
  values of its credential-like query (and fragment) parameters are replaced by `***`, the
  latter chosen by name (`is_secret_parameter`) or because the value is a known secret.
  `redact_url` does it for a URL, `redact_text` for URLs inside longer text (FFmpeg's errors
  quote the URL they failed on). Structure-based redaction works for secrets of any length.
* **Known values in free text.** A known secret is also replaced wherever else it appears,
  but only when it has at least `MIN_FREE_TEXT_SECRET` characters: replacing a password such
  as `e` or `camera` in every line would garble the log and show the password as the pattern
  of what went missing.

`debug_variables` names the environment variables that make OpenCV or FFmpeg print URLs
(with their passwords) to stderr, where nothing of this module can reach.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED: Final = "***"
# Shorter secrets are redacted only where the structure shows them (URLs); in free text they
# would match ordinary words.
MIN_FREE_TEXT_SECRET: Final = 8

# Query parameters that carry credentials on MJPEG/CGI cameras and signed URLs, matched on the
# lower-cased name: user names (redacted like the user in `user:password@`, but not secrets
# to look for in free text), these exact names, ...
USER_PARAMETER_NAMES: Final = frozenset({"user", "username", "usr", "login", "loginuse"})
SECRET_PARAMETER_NAMES: Final = frozenset({"loginpas", "pw", "pin", "sig"})
# ... any name containing one of these, ...
SECRET_PARAMETER_PARTS: Final = (
    "pass",
    "pwd",
    "secret",
    "token",
    "auth",
    "signature",
    "session",
)
# ... and any name ending with one of these (api_key, apikey, x-api-key, but not keyframes).
SECRET_PARAMETER_SUFFIXES: Final = ("key", "_sig", "-sig")

# userinfo in any scheme://user:pass@host form, also inside longer messages (FFmpeg errors
# echo the URL they failed on). Up to the last "@" before a "/": a password with an unencoded
# "@", "?" or "#" is covered whole (at worst a host is hidden with it).
_USERINFO_IN_TEXT = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s]+)@")
# name=value after a query, fragment or path separator (XMeye-style DVRs put
# `/user=admin_password=...` in the path), or starting a word of free text. The value runs to
# the next "&", "#" or white space: a password may hold anything else, and over-redacting a
# trailing ")" is the safe mistake.
_PARAMETER = re.compile(
    r"(?P<lead>[?&;#/_(\s]|^)(?P<name>[A-Za-z0-9_.\-\[\]%]+)=(?P<value>[^&#\s]*)", re.MULTILINE
)


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter of this name holds a credential (see the module's rules)."""
    lowered = unquote(name).lower()
    return (
        lowered in USER_PARAMETER_NAMES
        or lowered in SECRET_PARAMETER_NAMES
        or any(part in lowered for part in SECRET_PARAMETER_PARTS)
        or lowered.endswith(SECRET_PARAMETER_SUFFIXES)
    )


def _redact_parameters(text: str, secrets: frozenset[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        value = match["value"]
        if not value or value == REDACTED:
            return match[0]
        if is_secret_parameter(match["name"]) or value in secrets or unquote(value) in secrets:
            return f"{match['lead']}{match['name']}={REDACTED}"
        return match[0]

    return _PARAMETER.sub(replace, text)


def redact_url(url: str, *secrets: str) -> str:
    """The URL with its credentials replaced by `***`, safe to log or publish.

    User name and password are replaced, and so are credential-like query and fragment
    parameters (by name) and parameters whose value is one of `secrets`.
    """
    known = frozenset(s for s in secrets if s)
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url, *secrets)
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{REDACTED}:{REDACTED}@{host}"
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is not None:
            netloc += f":{port}"
    path = _redact_parameters(parts.path, known)
    query = _redact_parameters("?" + parts.query, known)[1:]
    fragment = _redact_parameters("#" + parts.fragment, known)[1:]
    if (netloc, path, query, fragment) == (parts.netloc, parts.path, parts.query, parts.fragment):
        return url  # nothing to hide: as written, not as urlunsplit would normalise it
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def redact_text(text: str, *secrets: str) -> str:
    """Text with URL credentials (user information, credential parameters) replaced, and each
    given secret of at least `MIN_FREE_TEXT_SECRET` characters replaced wherever it appears."""
    known = frozenset(s for s in secrets if s)
    text = _USERINFO_IN_TEXT.sub(rf"\g<scheme>{REDACTED}:{REDACTED}@", text)
    text = _redact_parameters(text, known)
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted(known, key=len, reverse=True):
        if len(secret) >= MIN_FREE_TEXT_SECRET:
            text = text.replace(secret, REDACTED)
    return text


def url_secrets(url: str) -> tuple[str, ...]:
    """The secret values a URL holds (its password, its credential parameters' values), as
    written and percent-decoded, since FFmpeg may echo either form."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return ()
    if password:
        found.add(password)
    for match in _PARAMETER.finditer(f"{parts.path}?{parts.query}#{parts.fragment}"):
        name = match["name"]
        if (
            match["value"]
            and is_secret_parameter(name)
            and unquote(name).lower() not in USER_PARAMETER_NAMES
        ):
            found.add(match["value"])
    return tuple(sorted(found | {unquote(value) for value in found}))


class RedactingFormatter(logging.Formatter):
    """A log formatter that scrubs URL credentials and known secret values from every line.

    Defence in depth: code already logs redacted URLs, but an exception text from a library
    (FFmpeg, paho, ssl) may quote what it was given.
    """

    def __init__(self, fmt: str, *, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in set(secrets) if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), *self._secrets)


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _opencv_log_level_is_verbose(value: str) -> bool:
    # OPENCV_LOG_LEVEL is a level ("DEBUG", "V") or "tag:level" pairs separated by ";" or ",".
    levels = (item.rpartition(":")[2].strip().upper() for item in re.split(r"[;,]", value))
    return any(level in ("D", "DEBUG", "V", "VERBOSE") for level in levels)


_AV_LOG_VERBOSE: Final = 40  # FFmpeg's level from which URLs and headers are printed


def _ffmpeg_log_level_is_verbose(value: str) -> bool:
    try:
        return int(value.strip()) >= _AV_LOG_VERBOSE
    except ValueError:
        return False


def debug_variables(environ: Mapping[str, str]) -> list[str]:
    """The set environment variables (`NAME=value`) that make OpenCV or FFmpeg print stream
    URLs, passwords included, or request headers to stderr, unredacted."""
    checks = {
        "OPENCV_VIDEOIO_DEBUG": _truthy,
        "OPENCV_VIDEOCAPTURE_DEBUG": _truthy,
        "OPENCV_FFMPEG_DEBUG": _truthy,
        "OPENCV_FFMPEG_LOGLEVEL": _ffmpeg_log_level_is_verbose,
        "OPENCV_LOG_LEVEL": _opencv_log_level_is_verbose,
    }
    return [
        f"{name}={environ[name]}"
        for name, is_on in checks.items()
        if name in environ and is_on(environ[name])
    ]
