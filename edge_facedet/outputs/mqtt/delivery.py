"""In what order an MQTT output's messages go out on each connection.

`Delivery` sends from the output's stores (outbox.py): on every connect all retained
messages are unsent again, and the extra retained ones (discovery, the manifest, clearings)
go first, before `online`. Then, as they come, retained messages, camera states and
snapshots (few, and about the present) go before the faces and events outbox. After a
connect that sent retained messages, the states and snapshots go out once more
`REANNOUNCE_DELAY_S` later (see there why). At close the flush sends the outbox before the
snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

import aiomqtt

if TYPE_CHECKING:
    from edge_facedet.outputs.mqtt.outbox import LatestByKey, Message, Outbox
    from edge_facedet.outputs.mqtt.session import Link

__all__ = ["IN_FLIGHT_MAX", "OTHER_PUBLISHES", "REANNOUNCE_DELAY_S", "Delivery"]

log = logging.getLogger(__name__)

# Home Assistant subscribes to a newly announced entity's topics only once it has processed
# the discovery config, and until the next message on the state topic it shows the entity as
# unavailable, even though the retained state was already on the broker. So after the
# announcements of a connect, the retained states and snapshots are sent once more, this long
# later: enough for HA to have subscribed, too short for anyone to notice the gap. Not a
# setting: it only repeats messages that are already retained.
REANNOUNCE_DELAY_S = 1.0

# Outbox messages on the wire without their PUBACK yet. Under paho's own limit (20, above
# which paho queues them itself where no timeout or requeue of ours reaches them) and under
# Mosquitto's default Receive Maximum (20). A broker that announces a smaller Receive Maximum
# gets that less OTHER_PUBLISHES.
IN_FLIGHT_MAX = 16
# Publishes that may await a PUBACK beside the window: a state, snapshot or retained message
# (sent one at a time) and the node status.
OTHER_PUBLISHES = 2


class Delivery:
    """Sends the output's stores over a `Link`; the producers call `wake()` after adding."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        states: LatestByKey,
        snapshots: LatestByKey,
        retained: LatestByKey,
    ) -> None:
        self._outbox = outbox
        self._states = states
        self._snapshots = snapshots
        self._retained = retained
        self._wakeup = asyncio.Event()
        # Outbox messages published but not acknowledged yet, oldest first.
        self._in_flight: deque[tuple[Message, asyncio.Task[None]]] = deque()
        # Loop time at which states and snapshots are sent again (REANNOUNCE_DELAY_S).
        self._resend_at: float | None = None

    @property
    def in_flight(self) -> int:
        """Outbox messages sent and not acknowledged yet."""
        return len(self._in_flight)

    def wake(self) -> None:
        """Something was added (or close() was asked): `send_pending` looks again."""
        self._wakeup.set()

    def on_connected(self) -> None:
        self._states.mark_all_unsent()
        self._snapshots.mark_all_unsent()
        self._retained.mark_all_unsent()
        self._resend_at = None  # armed again by this connection's announcements

    async def send_retained(self, link: Link) -> None:
        announced = bool(self._retained)
        while self._retained:
            topic, message = self._retained.next_unsent()
            await link.publish(message)
            self._retained.sent(topic, message)
        if announced:
            self._resend_at = asyncio.get_running_loop().time() + REANNOUNCE_DELAY_S

    async def send_pending(self, link: Link) -> None:
        """Retained, states and snapshots first (few, and about the present), then the outbox."""
        try:
            await self._send_pending(link)
        except BaseException:
            self._abandon_in_flight()
            raise

    async def _send_pending(self, link: Link) -> None:
        while not link.closing:
            self._take_acknowledged()
            self._resend_if_due()
            if self._retained:
                await self.send_retained(link)
            elif self._states:
                await self._send_latest(self._states, link)
            elif self._snapshots:
                await self._send_latest(self._snapshots, link)
            elif self._outbox and len(self._in_flight) < self._window(link):
                await self._send_next_queued(link)
            else:
                # Cleared only here, with every queue seen empty or the window full; the
                # producers set it after adding, an acknowledgement that frees the window or a
                # failure in it sets it too (`_on_settled`), and close() does; everything runs
                # on one loop, so no wake-up is lost.
                self._wakeup.clear()
                await self._wait_for_work()

    async def flush(self, link: Link, *, timeout_s: float) -> None:
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._flush(link), timeout_s)
        finally:
            # Not acknowledged in time: back in the outbox, where an output taking over
            # this one's work (a reload) finds them. The broker may still have them: that
            # is the at-least-once of the window.
            self._abandon_in_flight()
        if self._outbox:
            log.info("MQTT closing with %d faces/event message(s) unsent", len(self._outbox))

    async def _flush(self, link: Link) -> None:
        # The outbox before the snapshots here: at a stop it holds the tracks' `end` events,
        # and a large picture must not use up the little time there is.
        while self._states or self._outbox or self._in_flight or self._snapshots:
            if self._states:
                await self._send_latest(self._states, link)
            elif self._outbox and len(self._in_flight) < self._window(link):
                await self._send_next_queued(link)
            elif self._in_flight:
                await self._settle_oldest()
            else:
                await self._send_latest(self._snapshots, link)

    def _resend_if_due(self) -> None:
        if self._resend_at is not None and asyncio.get_running_loop().time() >= self._resend_at:
            self._resend_at = None
            self._states.mark_all_unsent()
            self._snapshots.mark_all_unsent()

    async def _wait_for_work(self) -> None:
        """Until something is added, or the re-send after announcements is due."""
        if self._resend_at is None:
            await self._wakeup.wait()
            return
        delay = self._resend_at - asyncio.get_running_loop().time()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), max(delay, 0.0))

    @staticmethod
    async def _send_latest(latest: LatestByKey, link: Link) -> None:
        key, message = latest.next_unsent()
        await link.publish(message)
        latest.sent(key, message)

    async def _send_next_queued(self, link: Link) -> None:
        message = self._outbox.popleft()
        if message.qos == 0:
            # Returns once written: nothing to acknowledge, nothing to pipeline.
            try:
                await link.publish(message)
            except BaseException:
                # Not written (connection lost, cancelled): keep it for the next connection.
                self._outbox.requeue(message)
                raise
            return
        task = asyncio.create_task(link.publish(message), name="mqtt-publish")
        task.add_done_callback(self._on_settled)
        self._in_flight.append((message, task))
        # Let the task take its first step, which hands the message to paho, before the next
        # message is handed over: otherwise a QoS-0 message behind it would go out first.
        # (A new task's first step is already scheduled, so it runs before we resume.)
        await asyncio.sleep(0)

    @staticmethod
    def _window(link: Link) -> int:
        if link.receive_maximum is None:
            return IN_FLIGHT_MAX
        return max(1, min(IN_FLIGHT_MAX, link.receive_maximum - OTHER_PUBLISHES))

    async def _settle_oldest(self) -> None:
        """Wait for the oldest message in flight to be acknowledged; raise if it was not."""
        _, task = self._in_flight[0]
        await asyncio.wait((task,))  # not `await task`: a cancellation of ours stays ours
        self._take_acknowledged()

    def _take_acknowledged(self) -> None:
        """Drop the acknowledged messages from the front of the window; raise the error of
        the first one that failed (the caller's clean-up then requeues the window)."""
        while self._in_flight and self._in_flight[0][1].done():
            _, task = self._in_flight[0]
            # Cancelled only by _abandon_in_flight, which empties the window; any other
            # cancellation is a publish that did not happen, like a failed one.
            error = aiomqtt.MqttError("publish cancelled") if task.cancelled() else task.exception()
            if error is not None:
                raise error
            self._in_flight.popleft()

    def _on_settled(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._wakeup.set()  # send_pending raises it
            return
        # Acknowledged: leave the window now, not at send_pending's next turn (which may be
        # long in coming when the outbox is empty), so the window's length is what is in flight.
        while self._in_flight and _acknowledged(self._in_flight[0][1]):
            self._in_flight.popleft()
        if self._outbox or (self._in_flight and self._in_flight[0][1].done()):
            # Room in the window for what waits, or the new oldest had failed meanwhile.
            self._wakeup.set()

    def _abandon_in_flight(self) -> None:
        """The connection is done with: what it did not acknowledge goes back to the front
        of the outbox in its order (newest requeued first, so a full outbox keeps the newest,
        as drop-oldest would have)."""
        while self._in_flight:
            message, task = self._in_flight.pop()
            if _acknowledged(task):
                continue
            task.cancel()
            self._outbox.requeue(message)


def _acknowledged(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
