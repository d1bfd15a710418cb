"""What one MQTT connect attempt needs from the secrets: the password and the TLS context.

Read again for every attempt, so a rotated password or a renewed certificate is picked up on
the next reconnect without a restart. Reading files is blocking I/O: the connection calls
`client_credentials` in a worker thread.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from edge_facedet.config import MqttConfig, TlsConfig

__all__ = ["client_credentials", "tls_context"]


def client_credentials(
    config: MqttConfig, *, environ: Mapping[str, str] | None, credentials_dir: Path | None
) -> tuple[str | None, ssl.SSLContext | None]:
    """(password, TLS context) for one connect attempt; None for what is not configured."""
    password = None
    if config.password is not None:
        password = config.password.reveal(environ=environ, credentials_dir=credentials_dir)
    context = tls_context(config.tls) if config.tls.enabled else None
    return password, context


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client context verifying the broker against `tls.ca_file` (or the system store)."""
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file is not None else None
    )
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    if tls.insecure:  # config validation already required allow_insecure for this
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
