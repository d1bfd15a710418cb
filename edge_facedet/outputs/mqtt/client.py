"""The aiomqtt client of one connection attempt: protocol, Last Will, TLS, limits."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import aiomqtt

from edge_facedet.outputs.mqtt.hooks import connect_properties

if TYPE_CHECKING:
    import logging
    import ssl

    from edge_facedet.config import MqttConfig

__all__ = ["CONNECT_TIMEOUT_S", "new_client"]

CONNECT_TIMEOUT_S = 5.0
"""Bounds the wait for CONNACK (a broker that drops us during the TLS handshake never sends
one); the connection raises it to its publish timeout once connected."""


def new_client(
    *,
    config: MqttConfig,
    client_id: str,
    will_topic: str,
    password: str | None,
    tls_context: ssl.SSLContext | None,
    logger: logging.Logger,
) -> aiomqtt.Client:
    """A client that has not connected yet; entering it connects."""
    return aiomqtt.Client(
        config.host,
        config.effective_port,
        identifier=client_id,
        username=config.username,
        password=password,
        logger=logger,
        # v5 so a publish the broker's ACL denies is reported (PUBACK reason code).
        protocol=aiomqtt.ProtocolVersion.V5,
        # v5 "clean start" with the default session expiry of 0 is 3.1.1's clean session:
        # the broker keeps nothing for us; the outbox is our queue.
        clean_start=True,
        will=aiomqtt.Will(will_topic, b"offline", qos=config.qos.status, retain=True),
        keepalive=config.keepalive_s,
        tls_context=tls_context,
        timeout=CONNECT_TIMEOUT_S,
        # MQTT 5 Maximum Packet Size: the largest thing the service reads is its manifest.
        properties=connect_properties(),
        # paho leaves Nagle on. A QoS-1 event right after a QoS-0 faces message (which the
        # broker never answers) then waits in our kernel for the broker's delayed ACK, 40 ms
        # on Linux, and the outbox behind it waits for that event's PUBACK: at 20 substream
        # cameras faces messages reached subscribers 7.7 s late (docs/benchmarks.md).
        socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
    )
