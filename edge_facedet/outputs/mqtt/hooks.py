"""The one place that reaches into the paho client under aiomqtt, and why each hook exists.

aiomqtt 2.x drives paho from the event loop but leaves gaps a broken or hostile broker can
use. `WireHooks` closes them on one client (a new client is made per connect attempt):

* **Packet size.** paho reads a packet's announced remaining length and then reads until it
  has all of it: an unsolicited 200 MB PUBLISH becomes 200 MB of memory. The service
  subscribes only to read its own camera manifest, so no legitimate inbound packet is
  larger than that (`MAX_INBOUND_PACKET` leaves room for it). paho asks for the whole
  rest of a packet in its first body read, so `_capped_recv` refuses a read larger than
  `MAX_INBOUND_PACKET` before a byte of the body is read; paho then drops the connection
  (it reports the refusal as a socket error). MQTT 5 brokers are also told the limit in the
  CONNECT (`connect_properties`: Maximum Packet Size), so a well-behaved one never sends more.
  paho also keeps every QoS 2 PUBLISH until the broker releases it (PUBREL); a broker that
  never does may not hold more than `MAX_UNRELEASED` (MQTT 5 Receive Maximum) of them.
* **Closed before CONNACK.** aiomqtt ignores a disconnect that comes before the CONNACK and
  waits out its timeout, so a broker that refuses a CONNECT by closing the connection looked
  like one that does not answer. `closed` is set at once instead.
* **Stale descriptors.** aiomqtt registers the socket with the loop through
  `call_soon_threadsafe`; when paho closes the socket before that runs (a garbage packet
  right after a publish), the loop is handed a closed descriptor ("Exception in callback
  ... add_writer ... Bad file descriptor" with a traceback), or another socket's that reused
  the number. `_GuardedLoop` registers a descriptor only while it is still paho's socket.
* **Dropped while a cancelled connect winds down.** aiomqtt's disconnect callback reads the
  connect future's exception, which raises on a future close() cancelled; it is not called
  then (it would have ignored the disconnect anyway).
* **Dropped right after the CONNACK.** aiomqtt then forgets the disconnect (it replaces
  the future holding it, and asyncio logs "Future exception was never retrieved"); the
  exception is retrieved here and `dropped` tells the connection.
* **A failed connect leaves the socket open** and registered with the loop (aiomqtt only
  raises its timeout); `release()` closes it, so a broker that never answers costs no
  descriptor per attempt. It also cancels aiomqtt's `_misc_task` when that outlived the
  connection: aiomqtt schedules its creation from paho's thread and cancels it when the
  socket closes, so a close that comes first (garbage right after the CONNACK) leaves it
  running, and at shutdown asyncio logs "Task was destroyed but it is pending".
* **A connect that completes after the attempt ended.** aiomqtt runs paho's socket connect
  in an executor thread, which cancelling does not stop: a close() during it left the
  socket to connect later and send a CONNECT with the node's client id and will, an open
  connection nobody owned. After `release()`, a socket that opens is closed in that thread,
  before paho writes to it and before aiomqtt hands it to the loop.
* **Receive Maximum.** paho ignores the one in the broker's CONNACK (MQTT 5: how many QoS>0
  publishes may await their acknowledgement at once; more is a protocol error the broker may
  disconnect for). `receive_maximum` keeps it for delivery.py's window.
* **Writes.** aiomqtt has paho's socket watched for writing after every publish: through
  `call_soon_threadsafe` (a write to the loop's self-pipe and a turn of the loop to read it),
  then `add_writer` and `remove_writer` (two `epoll_ctl`), all for one `send` on a socket
  that is almost always writable; and a QoS-0 publish, not yet written when paho returns,
  waits for paho's on_publish through an event and `asyncio.wait_for` (a task and a timer).
  A publish made on the loop's thread (all of the service's) is written at once instead, as
  paho itself does without an external loop, so it returns written and aiomqtt does not
  wait; the socket is watched only when the kernel did not take it all. From inside one of
  paho's callbacks the write waits for the loop's next turn. At 120 faces messages/s the
  event loop's CPU per frame fell to 0.88 of aiomqtt's way with writes at the next turn,
  and to 0.87 of that with writes at once (medians of 6 rounds each, docs/benchmarks.md).
* **PUBACK reason codes.** aiomqtt 2.x drops them (its `_on_publish`), so an ACL-denied
  publish looks delivered; `watch_publish_failures` hands them on. aiomqtt 3 raises
  `NegativeAckError` instead.

These use paho's private `_sock`, `_sock_recv`, `_in_packet`, `_in_callback_mutex` and
`_sock_close`, and aiomqtt's `_loop`, `_client`, `_connected`, `_disconnected` and
`_misc_task` (paho-mqtt 2.2, aiomqtt 2.5); tests/test_mqtt_hostile.py and test_publisher.py
fail if an upgrade changes them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_facedet.outputs.mqtt.errors import WireEvents
from edge_facedet.outputs.mqtt.manifest import MAX_MANIFEST_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiomqtt
    import paho.mqtt.client as paho_mqtt

__all__ = [
    "MAX_INBOUND_PACKET",
    "MAX_UNRELEASED",
    "PacketTooLargeError",
    "WireHooks",
    "connect_properties",
    "watch_publish_failures",
]

log = logging.getLogger(__name__)

# Inbound packets are acknowledgements, CONNACK, PINGRESP and DISCONNECT (a few bytes, or a
# few hundred with MQTT 5 reason strings and user properties) and the one message the
# service reads: its own retained camera manifest. A broker that honours the limit drops a
# larger message silently, so the largest manifest must fit (332 KiB in all).
MAX_INBOUND_PACKET = 64 * 1024 + MAX_MANIFEST_BYTES
# Unsolicited QoS 2 messages paho may hold awaiting their PUBREL: memory is bounded by this
# times the packet limit (5.4 MB).
MAX_UNRELEASED = 16


class PacketTooLargeError(OSError):
    """Inbound data over a limit; paho drops the connection on it (as on a socket error)."""


def connect_properties(*, max_packet: int = MAX_INBOUND_PACKET) -> Properties:
    """The MQTT 5 CONNECT properties: the largest packet the broker may send us."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.MaximumPacketSize = max_packet
    properties.ReceiveMaximum = MAX_UNRELEASED
    return properties


def watch_publish_failures(
    client: aiomqtt.Client, on_failure: Callable[[str, ReasonCode], None]
) -> None:
    """Call `on_failure(topic, reason)` for each failing PUBACK/PUBREC `client` receives.

    Several publishes may await their PUBACK at once (delivery.py's window), so the topic is
    found by the message id paho gives each publish.
    """
    paho = getattr(client, "_client", None)
    original = getattr(paho, "on_publish", None)
    publish = getattr(paho, "publish", None)
    if paho is None or original is None or publish is None:
        return
    # Message id -> topic, for the publishes not acknowledged (or written) yet; the client,
    # and so this, lasts one connection attempt.
    topics: dict[int, str] = {}

    def tracked_publish(topic: str, *args: Any, **kwargs: Any) -> Any:
        info = publish(topic, *args, **kwargs)
        if info.rc == 0 and not info.is_published():
            topics[info.mid] = topic
        return info

    def on_publish(*args: Any) -> None:
        topic = topics.pop(args[2], None) if len(args) > 2 else None
        reason = args[3] if len(args) > 3 else None
        if isinstance(reason, ReasonCode) and reason.is_failure:
            on_failure(topic or "?", reason)
        original(*args)

    paho.publish = tracked_publish
    paho.on_publish = on_publish


class WireHooks:
    """The hooks on one aiomqtt client; see the module docstring. Use from the loop thread."""

    def __init__(
        self,
        client: aiomqtt.Client,
        *,
        loop: asyncio.AbstractEventLoop,
        max_packet: int = MAX_INBOUND_PACKET,
    ) -> None:
        self._client = client
        self._paho: paho_mqtt.Client = client._client
        self._loop = loop
        self._max_packet = max_packet
        self._connack = False
        self.receive_maximum: int | None = None
        """The broker's MQTT 5 Receive Maximum from its CONNACK (None: it sent none, 65535)."""
        self._closed_reason: str | None = None
        self._oversize: int | None = None
        self._unreleased: int | None = None
        self._released = False
        self.closed = asyncio.Event()
        """Set when the connection ends before any CONNACK."""
        setattr(client, "_loop", _GuardedLoop(loop, self._paho))  # noqa: B010 - private
        self._wrap_callbacks()
        self._cap_reads()
        self._write_at_once()
        self._close_late_sockets()

    def events(self) -> WireEvents:
        return WireEvents(
            closed_before_connack=self._closed_reason,
            oversize=self._oversize,
            limit=self._max_packet,
            unreleased=self._unreleased,
        )

    @property
    def dropped(self) -> bool:
        """Whether paho has closed the connection (aiomqtt may not know yet)."""
        return self._paho.socket() is None

    def release(self) -> asyncio.Task[None] | None:
        """Close the socket a failed or abandoned connect left open (no-op once closed), and
        cancel aiomqtt's housekeeping task if it outlived the connection; returns that task,
        for the caller to await. A socket the connect's thread opens later is closed there."""
        self._released = True  # before the check: the thread sets the socket, then reads it
        if self._paho.socket() is not None:
            self._paho._sock_close()
        misc = getattr(self._client, "_misc_task", None)
        if isinstance(misc, asyncio.Task) and not misc.done():
            misc.cancel()
            return misc
        return None

    def _wrap_callbacks(self) -> None:
        paho = self._paho
        on_connect: Callable[..., None] | None = paho.on_connect
        on_disconnect: Callable[..., None] | None = paho.on_disconnect

        def connected(*args: Any) -> None:
            # Any CONNACK, accepted or not: aiomqtt reports a refusal itself.
            self._connack = True
            # paho does not honour the broker's Receive Maximum; delivery.py's window must.
            properties = args[4] if len(args) > 4 else None
            self.receive_maximum = getattr(properties, "ReceiveMaximum", None)
            if on_connect is not None:
                on_connect(*args)

        def disconnected(*args: Any) -> None:
            connecting = getattr(self._client, "_connected", None)
            abandoned = isinstance(connecting, asyncio.Future) and connecting.cancelled()
            # aiomqtt ignores a disconnect before the connect completed, but asks the future
            # for its exception first, which raises when close() cancelled the connect: the
            # loop then logged "Exception in callback" with a traceback.
            if on_disconnect is not None and not abandoned:
                on_disconnect(*args)
            pending = getattr(self._client, "_disconnected", None)
            if isinstance(pending, asyncio.Future) and pending.done() and not pending.cancelled():
                pending.exception()  # retrieved: aiomqtt may drop this future unawaited
            if not self._connack and self._closed_reason is None:
                reason = args[3] if len(args) > 3 else None
                self._closed_reason = str(reason) if reason is not None else "closed"
                self._loop.call_soon_threadsafe(self.closed.set)

        paho.on_connect = connected
        paho.on_disconnect = disconnected

    def _write_at_once(self) -> None:
        paho: Any = self._paho
        loop = self._loop
        watch: Callable[..., None] | None = paho.on_socket_register_write
        if watch is None:
            return
        loop_thread = threading.get_ident()  # hooks are made on the loop's thread
        client = self._client
        in_callback: threading.Lock = paho._in_callback_mutex

        def write(sock: Any) -> None:
            if paho.socket() is not sock:
                return  # closed meanwhile: this client's connection is over
            try:
                paho.loop_write()
            except Exception as exc:  # noqa: BLE001 - as aiomqtt's own writer callback does
                pending = getattr(client, "_disconnected", None)
                if isinstance(pending, asyncio.Future):
                    if not pending.done():
                        pending.set_exception(exc)
                else:
                    # aiomqtt changed: closed, the next publish fails at once instead of the
                    # queued data waiting, unwatched, for a publish timeout.
                    paho._sock_close()
                return
            # loop_write leaves paho registered for writing while data remains, without
            # asking again: the rest is aiomqtt's watch to write when the socket drains.
            if paho.socket() is sock and paho.want_write():
                watch(paho, None, sock)

        def register_write(paho_client: Any, userdata: Any, sock: Any) -> None:
            # paho calls this only when it was not registered already, so at most one write
            # is waiting for the loop (a second, after a write emptied the queue, is cheap).
            if threading.get_ident() != loop_thread:
                watch(paho_client, userdata, sock)  # connect() runs in an executor thread
                return
            # paho's own test before it writes from inside a publish (its _packet_queue): a
            # write calls on_publish, which must not run inside another of its callbacks.
            if in_callback.acquire(blocking=False):
                in_callback.release()
                write(sock)
            else:
                loop.call_soon(write, sock)

        paho.on_socket_register_write = register_write

    def _close_late_sockets(self) -> None:
        paho: Any = self._paho
        opened: Callable[..., None] | None = paho.on_socket_open

        def socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
            if self._released:
                # In the connect's executor thread, after the attempt ended: nothing else
                # holds this client. paho's CONNECT then finds no socket and is dropped.
                paho._sock = None
                sock.close()
                log.debug("MQTT: closed a connection that completed after its attempt ended")
                return
            if opened is not None:
                opened(paho_client, userdata, sock)

        paho.on_socket_open = socket_open

    def _cap_reads(self) -> None:
        paho: Any = self._paho
        recv: Callable[[int], bytes] = paho._sock_recv
        limit = self._max_packet

        def capped_recv(bufsize: int) -> bytes:
            unreleased = len(paho._in_messages)
            if unreleased > MAX_UNRELEASED:
                self._unreleased = unreleased
                raise PacketTooLargeError(
                    f"the broker left {unreleased} unsolicited QoS 2 messages unreleased"
                )
            # paho's first read of a packet's body asks for all of it (its remaining length);
            # the command byte and the length bytes are read one at a time.
            if bufsize > limit:
                self._oversize = int(paho._in_packet["remaining_length"])
                raise PacketTooLargeError(
                    f"inbound packet of {self._oversize} bytes is over the {limit}-byte limit"
                )
            return recv(bufsize)

        paho._sock_recv = capped_recv


class _GuardedLoop:
    """aiomqtt's view of the event loop: registers a descriptor only while paho still has it.

    aiomqtt schedules `add_reader`/`add_writer` with `call_soon_threadsafe`; the check runs
    when they run, on the loop thread, after any close that came first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, paho: paho_mqtt.Client) -> None:
        self._real_loop = loop
        self._paho = paho

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real_loop, name)

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        if self._current(fd):
            self._real_loop.add_reader(fd, callback, *args)

    def add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        if self._current(fd):
            self._real_loop.add_writer(fd, callback, *args)

    def _current(self, fd: int) -> bool:
        sock = self._paho.socket()
        if sock is not None and sock.fileno() == fd:
            return True
        log.debug("MQTT socket %d closed before the loop could watch it", fd)
        return False
