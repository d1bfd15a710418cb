"""MQTT connection failures: one-line explanations, and which of them to log again.

Pure: no I/O, no logging, time passed in. The connection logs what `describe_failure` returns
when `RepeatFilter` says so: one warning per failure kind, the same kind again only after a
few minutes, so a broker that stays down does not fill the journal. aiomqtt turns socket
errors into `MqttError(str(error))`, so for network trouble the text is all there is to
classify; a negative CONNACK carries a reason code. What the wire showed (hooks.py: the
connection closed before any CONNACK, a packet over the size limit) is passed in as
`WireEvents`, so a broker that refuses a CONNECT by closing is not reported as one that does
not answer. Texts name the config field to check and never hold a password (the caller
redacts).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "BrokerIdentity",
    "Failure",
    "RepeatFilter",
    "WireEvents",
    "describe_failure",
    "describe_refusal",
]

# Words in an error text that make it a TLS problem.
_TLS_WORDS = ("certificate", "ssl", "tls")


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    """Where the connection goes and who it says it is: what a failure text names."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    will_topic: str | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class WireEvents:
    """What one connection's wire showed besides the exception (see hooks.py).

    `closed_before_connack`: the connection ended before any CONNACK, with paho's reason
    ("Unspecified error" for a plain close, "Protocol error" for bytes that are not MQTT).
    `oversize`: the remaining length a packet announced above `limit`, which ended it.
    `unreleased`: the QoS 2 messages the broker left without a PUBREL, over the Receive
    Maximum, which ended it. Like `oversize`, it is the cause whether the CONNACK had been
    seen yet or not: the client drops such a broker at whichever read finds it.
    """

    closed_before_connack: str | None = None
    oversize: int | None = None
    limit: int = 0
    unreleased: int | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A connection failure: its kind (for de-duplicating the log) and its one-line text."""

    kind: str
    text: str


def describe_failure(
    exc: BaseException,
    *,
    broker: BrokerIdentity,
    was_connected: bool,
    socket_error: str | None = None,
    wire: WireEvents | None = None,
) -> Failure:
    """Why one connection attempt (or connection) ended, naming the cause.

    `socket_error` is what paho logged at ERROR during the attempt (e.g. the server's TLS
    alert); it replaces a bare "timed out", which only says that no CONNACK came. `wire` is
    what the hooks saw; it names the cause when the exception cannot.
    """
    where = f"MQTT broker {broker.where}"
    detail = str(exc) or type(exc).__name__
    told = _told_by_the_broker(
        exc,
        broker=broker,
        was_connected=was_connected,
        socket_error=socket_error,
        wire=wire or WireEvents(),
    )
    if told is not None:
        return told
    if not isinstance(exc, aiomqtt.MqttError | ssl.SSLError):
        # Raised before any network traffic: the password source or a TLS file.
        return Failure(
            f"local:{type(exc).__name__}",
            f"cannot prepare the connection to {where}: {type(exc).__name__}: {detail} "
            "(check mqtt.password and the mqtt.tls files)",
        )
    if socket_error is not None and "timed out" in detail.lower():
        # No CONNACK because the connection died first: the socket error is the cause.
        detail = socket_error
    low = detail.lower()
    if isinstance(exc, ssl.SSLError) or any(w in low for w in _TLS_WORDS):
        return _tls_failure(where, detail)
    hints = (
        ("connection refused", "down", f"{where} refused the TCP connection; is it running?"),
        ("name or service", "dns", f"cannot resolve MQTT host {broker.host!r}"),
        ("name resolution", "dns", f"cannot resolve MQTT host {broker.host!r}"),
        ("timed out", "timeout", f"{where} did not answer in time"),
        ("unreachable", "unreachable", f"{where} is unreachable"),
    )
    for needle, kind, text in hints:
        if needle in low:
            return Failure(kind, f"{text} ({detail})")
    return Failure("network", f"cannot connect to {where}: {detail}")


def _told_by_the_broker(
    exc: BaseException,
    *,
    broker: BrokerIdentity,
    was_connected: bool,
    socket_error: str | None,
    wire: WireEvents,
) -> Failure | None:
    """The failures the broker's own answer explains: a packet too large, a refusal, a loss."""
    where = f"MQTT broker {broker.where}"
    if wire.oversize is not None:
        return Failure(
            "oversize",
            f"{where} sent a packet of {wire.oversize} bytes, over the {wire.limit}-byte limit "
            "(the service reads nothing that large); dropped the connection",
        )
    if wire.unreleased is not None:
        return Failure(
            "unreleased",
            f"{where} left {wire.unreleased} unsolicited QoS 2 messages unreleased "
            "(it sent no PUBREL for them); dropped the connection",
        )
    if isinstance(exc, MqttConnectError):
        return describe_refusal(exc, broker=broker)
    if was_connected:
        detail = str(exc) or type(exc).__name__
        if socket_error is not None:
            detail = f"{detail}; {socket_error}"
        return Failure("lost", f"lost the connection to {where}: {detail}")
    if wire.closed_before_connack is not None:
        return _closed_during_connect(
            wire.closed_before_connack, broker=broker, socket_error=socket_error
        )
    return None


def _tls_failure(where: str, detail: str) -> Failure:
    return Failure(
        "tls",
        f"TLS handshake with {where} failed: {detail} (check mqtt.tls.ca_file, "
        "the server certificate's host names and the client certificate)",
    )


def _closed_during_connect(
    reason: str, *, broker: BrokerIdentity, socket_error: str | None
) -> Failure:
    """The connection ended before any CONNACK: a refusal by closing, not a timeout."""
    where = f"MQTT broker {broker.where}"
    detail = socket_error or reason
    if any(w in detail.lower() for w in _TLS_WORDS):
        return _tls_failure(where, detail)
    if "protocol" in reason.lower() or "unrecognised command" in detail.lower():
        return Failure(
            "protocol",
            f"{where} answered the CONNECT with bytes that are not MQTT ({detail}); "
            "is it an MQTT broker on that port?",
        )
    will = f", will topic {broker.will_topic!r}" if broker.will_topic else ""
    seen = f" ({socket_error})" if socket_error else ""
    return Failure(
        "closed",
        f"{where} closed the connection during CONNECT: it refused the client's CONNECT "
        f"(client id {broker.client_id!r}, protocol MQTT 5{will}; its log says why){seen}",
    )


def describe_refusal(exc: MqttConnectError, *, broker: BrokerIdentity) -> Failure:
    """A negative CONNACK: the broker is up but does not want us."""
    where = f"MQTT broker {broker.where}"
    reason = str(exc.rc) if isinstance(exc.rc, ReasonCode) else str(exc)
    lowered = reason.lower()
    if any(w in lowered for w in ("password", "not authori", "bad user")):
        who = f"as user {broker.username!r}" if broker.username else "anonymously"
        return Failure(
            "auth",
            f"{where} refused the connection: {reason} "
            f"(check mqtt.username/password; connecting {who})",
        )
    if "identifier" in lowered:
        return Failure("client-id", f"{where} refused client id {broker.client_id!r}: {reason}")
    if "topic" in lowered and broker.will_topic:
        return Failure(
            "refused",
            f"{where} refused the connection: {reason} (the Last Will goes to "
            f"{broker.will_topic!r}; check mqtt.topic_prefix)",
        )
    return Failure("refused", f"{where} refused the connection: {reason}")


class RepeatFilter:
    """Which failures deserve a warning: a new kind at once, the same kind every `repeat_s`."""

    def __init__(self, *, repeat_s: float) -> None:
        self._repeat_s = repeat_s
        self._last_kind: str | None = None
        self._last_warned = 0.0
        self._since_success = 0

    def failed(self, failure: Failure, *, now: float) -> str | None:
        """The warning text for `failure` at `now` (monotonic s), or None: too soon again."""
        self._since_success += 1
        if failure.kind != self._last_kind:
            text = failure.text
        elif now - self._last_warned < self._repeat_s:
            return None
        else:
            text = f"{failure.text} ({self._since_success} attempts so far)"
        self._last_kind = failure.kind
        self._last_warned = now
        return text

    def failures(self) -> int | None:
        """The failed attempts since the last success, or None when none was reported."""
        return self._since_success if self._last_kind is not None else None

    def succeeded(self) -> int | None:
        """A stable connection: the failed attempts before it (see `failures`); resets."""
        failed = self.failures()
        self._last_kind = None
        self._since_success = 0
        return failed
