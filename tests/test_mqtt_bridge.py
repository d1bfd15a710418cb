"""deploy/mosquitto: a node-local broker bridged to the central one, with the shipped configs.

Two real Mosquitto processes on free loopback ports run `central.conf` (TLS, passwords,
`central.acl`) and `edge-bridge.conf` (a local listener with passwords, the bridge over TLS
with a password) with only addresses, ports and file paths
rewritten. A client publishes like an edge-facedet node on the edge broker, with its Last
Will, and then dies without a DISCONNECT; a subscriber on the central broker must receive
the bridge's state, the node's status, its faces message, the Last Will, and nothing of a
node the site's bridge user may not write.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import MosquittoBroker, TlsFiles, make_tls_files, mqtt_subscriber
from tests.support.net import free_port
from tests.support.paths import REPO

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.support.broker import Received

MOSQUITTO_DIR = REPO / "deploy" / "mosquitto"
NODE = "gate-1"
OTHER_NODE = "gate-9"
SERVICE_USER, SERVICE_PASSWORD = "edge-facedet", "node-local-pass-1"
BRIDGE_USER, BRIDGE_PASSWORD = "bridge-gate-1", "bridge-pass-0123"
VIEWER_USER, VIEWER_PASSWORD = "viewer", "viewer-pass-0123"


def rewrite(text: str, replacements: dict[str, str]) -> str:
    """`text` with each directive named in `replacements` given that value instead.

    Every directive must occur exactly once, so a renamed or dropped directive in the
    shipped file fails the test instead of silently keeping the file's production value.
    """
    for directive, value in replacements.items():
        pattern = re.compile(rf"^{re.escape(directive)}\b.*$", re.MULTILINE)
        text, count = pattern.subn(f"{directive} {value}".rstrip(), text)
        assert count == 1, f"{directive!r} occurs {count} times"
    return text


def password_file(path: Path, users: dict[str, str]) -> Path:
    path.touch(mode=0o600)
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True)
    return path


def shipped_broker(*, directory: Path, port: int, config: str) -> MosquittoBroker:
    """A `MosquittoBroker` (start, kill, log) running `config` instead of its generated one."""
    broker = MosquittoBroker(directory=directory, port=port)
    # Root would switch to the `mosquitto` user, which cannot read pytest's 0700 folders.
    broker.config_file.write_text(f"user root\nlog_dest stderr\nlog_type all\n{config}")
    return broker


@dataclass(frozen=True)
class Site:
    central: MosquittoBroker
    edge: MosquittoBroker
    tls: TlsFiles


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    tls = make_tls_files(tmp_path / "tls")
    central_dir = tmp_path / "central"
    central_dir.mkdir()
    acl = central_dir / "acl"
    acl.write_text((MOSQUITTO_DIR / "central.acl").read_text())
    central_port = free_port()
    central_passwd = password_file(
        central_dir / "passwd", {BRIDGE_USER: BRIDGE_PASSWORD, VIEWER_USER: VIEWER_PASSWORD}
    )
    central = shipped_broker(
        directory=central_dir,
        port=central_port,
        config=rewrite(
            (MOSQUITTO_DIR / "central.conf").read_text(),
            {
                "listener": f"{central_port} 127.0.0.1",
                "password_file": str(central_passwd),
                "acl_file": str(acl),
                "persistence": "false",
                "persistence_location": str(central_dir),
                "cafile": str(tls.ca_file),
                "certfile": str(tls.server_cert),
                "keyfile": str(tls.server_key),
            },
        ),
    )
    edge_dir = tmp_path / "edge"
    edge_dir.mkdir()
    edge_port = free_port()
    edge = shipped_broker(
        directory=edge_dir,
        port=edge_port,
        config=rewrite(
            (MOSQUITTO_DIR / "edge-bridge.conf").read_text(),
            {
                "listener": f"{edge_port} 127.0.0.1",
                "password_file": str(
                    password_file(edge_dir / "passwd", {SERVICE_USER: SERVICE_PASSWORD})
                ),
                "persistence": "false",
                "persistence_location": str(edge_dir),
                "address": f"127.0.0.1:{central_port}",
                "bridge_cafile": str(tls.ca_file),
                "remote_password": BRIDGE_PASSWORD,
                "restart_timeout": "1 2",
            },
        ),
    )
    try:
        central.start()
        yield Site(central=central, edge=edge, tls=tls)
    finally:
        edge.kill()
        central.kill()


class Node:
    """A client that publishes like an edge-facedet node: retained status with a Last Will."""

    def __init__(self, *, port: int, node_id: str) -> None:
        self.prefix = f"edge-facedet/{node_id}"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"edge-facedet-{node_id}"
        )
        self.client.username_pw_set(SERVICE_USER, SERVICE_PASSWORD)
        self.client.will_set(f"{self.prefix}/status", b"offline", qos=1, retain=True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, suffix: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        info = self.client.publish(f"{self.prefix}/{suffix}", payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=5.0)

    def die(self) -> None:
        """Drop the connection without DISCONNECT, as a killed process does: the Will fires."""
        self.client.loop_stop()
        sock = self.client.socket()
        assert sock is not None
        sock.close()


def topic_is(topic: str, payload: bytes | None = None) -> Callable[[list[Received]], bool]:
    return lambda messages: any(
        m.topic == topic and (payload is None or m.payload == payload) for m in messages
    )


async def test_central_subscriber_receives_the_sites_faces_status_and_last_will(
    site: Site,
) -> None:
    tls_context = ssl.create_default_context(cafile=str(site.tls.ca_file))
    async with mqtt_subscriber(
        ("edge-facedet/#", "edge-facedet-bridges/#"),
        host="127.0.0.1",
        port=site.central.port,
        qos=1,
        username=VIEWER_USER,
        password=VIEWER_PASSWORD,
        tls_context=tls_context,
    ) as central:
        started = time.monotonic()
        site.edge.start()
        await central.wait_for(topic_is("edge-facedet-bridges/gate-1/state", b"1"), timeout=8)
        bridged_s = time.monotonic() - started

        # paho's connect and wait_for_publish block: in a thread, off the event loop.
        other = await asyncio.to_thread(Node, port=site.edge.port, node_id=OTHER_NODE)
        await asyncio.to_thread(other.publish, "status", b"online", qos=1, retain=True)
        node = await asyncio.to_thread(Node, port=site.edge.port, node_id=NODE)
        await asyncio.to_thread(node.publish, "status", b"online", qos=1, retain=True)
        faces = b'{"camera":"door","seq":1,"faces":[]}'
        await asyncio.to_thread(node.publish, "cameras/door/faces", faces, qos=0)
        await central.wait_for(topic_is(f"edge-facedet/{NODE}/cameras/door/faces", faces))
        died = time.monotonic()
        node.die()
        await central.wait_for(topic_is(f"edge-facedet/{NODE}/status", b"offline"))
        will_s = time.monotonic() - died
        other.die()

    statuses = [m for m in central.messages if m.topic == f"edge-facedet/{NODE}/status"]
    assert [m.payload for m in statuses] == [b"online", b"offline"]
    # The bridge keeps the retain flag: a subscriber arriving later gets the node's status.
    async with mqtt_subscriber(
        f"edge-facedet/{NODE}/status",
        host="127.0.0.1",
        port=site.central.port,
        qos=1,
        username=VIEWER_USER,
        password=VIEWER_PASSWORD,
        tls_context=tls_context,
    ) as late:
        await late.wait_for(topic_is(f"edge-facedet/{NODE}/status", b"offline"))
    assert late.messages[0].retain
    # Published before the node's messages, in order on the same bridge: had the ACL let it
    # through, it would have arrived before them.
    assert not any(m.topic.startswith(f"edge-facedet/{OTHER_NODE}/") for m in central.messages)
    print(f"bridge up {bridged_s:.2f} s after the edge broker started; Will {will_s:.3f} s")


def test_bridge_refuses_a_central_broker_with_an_unknown_ca(site: Site, tmp_path: Path) -> None:
    """bridge_cafile is enforced: against another CA's certificate the bridge never connects."""
    stranger = make_tls_files(tmp_path / "stranger", name="stranger")
    config = site.edge.config_file.read_text()
    site.edge.config_file.write_text(
        config.replace(f"bridge_cafile {site.tls.ca_file}", f"bridge_cafile {stranger.ca_file}")
    )
    site.edge.start()
    deadline = time.monotonic() + 8
    while "certificate verify failed" not in site.edge.log():
        assert time.monotonic() < deadline, site.edge.log()[-2000:]
        time.sleep(0.05)
    assert "Connection Accepted" not in site.edge.log()
