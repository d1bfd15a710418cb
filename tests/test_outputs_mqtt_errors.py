"""The MQTT failure descriptions (outputs/mqtt/errors.py): pure, so no broker is needed.

The exceptions are the ones aiomqtt raises: `MqttConnectError` for a negative CONNACK,
`MqttError(str(socket error))` for network trouble, `ssl.SSLError` from a TLS context.
"""

from __future__ import annotations

import ssl

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge_facedet.config import ConfigError
from edge_facedet.outputs.mqtt.errors import (
    BrokerIdentity,
    Failure,
    RepeatFilter,
    WireEvents,
    describe_failure,
    describe_refusal,
)

BROKER = BrokerIdentity(host="broker.lan", port=8883, client_id="edge-facedet-n1")
WHERE = "MQTT broker broker.lan:8883"


def refusal(name: str) -> MqttConnectError:
    return MqttConnectError(ReasonCode(PacketTypes.CONNACK, name))


@pytest.mark.parametrize(("username", "who"), [("edge", "as user 'edge'"), (None, "anonymously")])
def test_bad_credentials_name_the_fields_and_the_user(username: str | None, who: str) -> None:
    broker = BrokerIdentity(host="broker.lan", port=8883, client_id="c", username=username)
    failure = describe_failure(refusal("Not authorized"), broker=broker, was_connected=False)
    assert failure == Failure(
        "auth",
        f"{WHERE} refused the connection: Not authorized "
        f"(check mqtt.username/password; connecting {who})",
    )


def test_refusals_by_reason_code() -> None:
    client_id = describe_refusal(refusal("Client identifier not valid"), broker=BROKER)
    assert client_id.kind == "client-id"
    assert "'edge-facedet-n1'" in client_id.text
    other = describe_refusal(refusal("Server unavailable"), broker=BROKER)
    assert other == Failure("refused", f"{WHERE} refused the connection: Server unavailable")


@pytest.mark.parametrize(
    ("error", "kind", "start"),
    [
        ("[Errno 111] Connection refused", "down", f"{WHERE} refused the TCP connection"),
        ("[Errno -2] Name or service not known", "dns", "cannot resolve MQTT host 'broker.lan'"),
        ("[Errno -3] Temporary failure in name resolution", "dns", "cannot resolve MQTT host"),
        ("Operation timed out", "timeout", f"{WHERE} did not answer in time"),
        ("[Errno 113] No route to host: unreachable", "unreachable", f"{WHERE} is unreachable"),
        ("[Errno 104] Connection reset by peer", "network", f"cannot connect to {WHERE}"),
    ],
)
def test_network_errors_by_their_text(error: str, kind: str, start: str) -> None:
    failure = describe_failure(aiomqtt.MqttError(error), broker=BROKER, was_connected=False)
    assert failure.kind == kind
    assert failure.text.startswith(start)
    assert error in failure.text


def test_tls_failures_point_at_the_tls_settings() -> None:
    failure = describe_failure(
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
        broker=BROKER,
        was_connected=False,
    )
    assert failure.kind == "tls"
    assert failure.text.startswith(f"TLS handshake with {WHERE} failed:")
    assert "mqtt.tls.ca_file" in failure.text


def test_a_socket_error_replaces_a_bare_timeout() -> None:
    # The server's TLS alert is logged by paho; aiomqtt only says that no CONNACK came.
    alert = "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"
    failure = describe_failure(
        aiomqtt.MqttError("Operation timed out"),
        broker=BROKER,
        was_connected=False,
        socket_error=alert,
    )
    assert failure.kind == "tls"
    assert alert in failure.text
    without = describe_failure(
        aiomqtt.MqttError("Operation timed out"), broker=BROKER, was_connected=False
    )
    assert without.kind == "timeout"


def test_local_problems_and_lost_connections() -> None:
    local = describe_failure(
        ConfigError("mqtt.password: environment variable MQTT_PW is not set"),
        broker=BROKER,
        was_connected=False,
    )
    assert local.kind == "local:ConfigError"
    assert "check mqtt.password and the mqtt.tls files" in local.text
    lost = describe_failure(
        aiomqtt.MqttError("connection lost: keepalive"), broker=BROKER, was_connected=True
    )
    assert lost == Failure("lost", f"lost the connection to {WHERE}: connection lost: keepalive")


def test_repeat_filter_warns_once_per_kind_then_every_few_minutes() -> None:
    down = Failure("down", "broker down")
    auth = Failure("auth", "refused")
    repeats = RepeatFilter(repeat_s=300.0)
    assert repeats.succeeded() is None  # nothing failed: a plain "connected"
    assert repeats.failed(down, now=0.0) == "broker down"
    assert repeats.failed(down, now=1.0) is None  # again, too soon: debug only
    assert repeats.failed(down, now=299.0) is None
    assert repeats.failed(down, now=301.0) == "broker down (4 attempts so far)"
    assert repeats.failed(auth, now=302.0) == "refused"  # a new kind: at once
    assert repeats.succeeded() == 5
    assert repeats.succeeded() is None
    assert repeats.failed(down, now=303.0) == "broker down"  # after a success: news again


WILL = BrokerIdentity(
    host="broker.lan", port=8883, client_id="edge-facedet-n1", will_topic="edge-facedet/n1/status"
)
CLOSED = aiomqtt.MqttError("the broker closed the connection before its CONNACK")


def test_a_connect_refused_by_closing_is_not_a_timeout() -> None:
    failure = describe_failure(
        CLOSED,
        broker=WILL,
        was_connected=False,
        wire=WireEvents(closed_before_connack="Unspecified error"),
    )
    assert failure == Failure(
        "closed",
        f"{WHERE} closed the connection during CONNECT: it refused the client's CONNECT "
        "(client id 'edge-facedet-n1', protocol MQTT 5, will topic 'edge-facedet/n1/status'; "
        "its log says why)",
    )


def test_bytes_that_are_not_mqtt_are_named_as_such() -> None:
    failure = describe_failure(
        CLOSED,
        broker=WILL,
        was_connected=False,
        socket_error="Error: Unrecognised command 240",
        wire=WireEvents(closed_before_connack="Protocol error"),
    )
    assert failure.kind == "protocol"
    assert failure.text.startswith(f"{WHERE} answered the CONNECT with bytes that are not MQTT")
    assert "Unrecognised command 240" in failure.text


def test_a_tls_alert_before_the_connack_stays_a_tls_failure() -> None:
    alert = "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert"
    failure = describe_failure(
        CLOSED,
        broker=WILL,
        was_connected=False,
        socket_error=alert,
        wire=WireEvents(closed_before_connack="Unspecified error"),
    )
    assert failure.kind == "tls"
    assert alert in failure.text


def test_an_oversized_packet_names_its_size_and_the_limit() -> None:
    for was_connected in (False, True):
        failure = describe_failure(
            aiomqtt.MqttError("connection lost"),
            broker=WILL,
            was_connected=was_connected,
            wire=WireEvents(oversize=209_715_200, limit=65_536),
        )
        assert failure == Failure(
            "oversize",
            f"{WHERE} sent a packet of 209715200 bytes, over the 65536-byte limit "
            "(the service reads nothing that large); dropped the connection",
        )


def test_unreleased_qos2_messages_are_one_failure_whenever_the_client_found_them() -> None:
    # Found before the connect returned, the client sees "closed right after its CONNACK";
    # found later, a lost connection. CI once logged both for one broker: two lines.
    found = WireEvents(unreleased=17)
    before = describe_failure(
        aiomqtt.MqttError("the broker closed the connection right after its CONNACK"),
        broker=WILL,
        was_connected=False,
        wire=found,
    )
    after = describe_failure(
        aiomqtt.MqttError("Disconnected during message iteration"),
        broker=WILL,
        was_connected=True,
        socket_error="failed to receive on socket: the broker left 17 ...",
        wire=found,
    )
    assert (
        before
        == after
        == Failure(
            "unreleased",
            f"{WHERE} left 17 unsolicited QoS 2 messages unreleased (it sent no PUBREL for them); "
            "dropped the connection",
        )
    )


def test_a_refused_will_topic_points_at_the_topic_prefix() -> None:
    failure = describe_refusal(refusal("Topic name invalid"), broker=WILL)
    assert failure.kind == "refused"
    assert "'edge-facedet/n1/status'; check mqtt.topic_prefix" in failure.text
