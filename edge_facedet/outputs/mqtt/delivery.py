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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_facedet.outputs.mqtt.outbox import LatestByKey, Outbox
    from edge_facedet.outputs.mqtt.session import Link

__all__ = ["REANNOUNCE_DELAY_S", "Delivery"]

log = logging.getLogger(__name__)

# Home Assistant subscribes to a newly announced entity's topics only once it has processed
# the discovery config, and until the next message on the state topic it shows the entity as
# unavailable, even though the retained state was already on the broker. So after the
# announcements of a connect, the retained states and snapshots are sent once more, this long
# later: enough for HA to have subscribed, too short for anyone to notice the gap. Not a
# setting: it only repeats messages that are already retained.
REANNOUNCE_DELAY_S = 1.0


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
        # Loop time at which states and snapshots are sent again (REANNOUNCE_DELAY_S).
        self._resend_at: float | None = None

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
        while not link.closing:
            self._resend_if_due()
            if self._retained:
                await self.send_retained(link)
            elif self._states:
                await self._send_latest(self._states, link)
            elif self._snapshots:
                await self._send_latest(self._snapshots, link)
            elif self._outbox:
                await self._send_next_queued(link)
            else:
                # Cleared only here, with every queue seen empty; the producers set it after
                # adding, and everything runs on one loop, so no wake-up is lost.
                self._wakeup.clear()
                await self._wait_for_work()

    async def flush(self, link: Link, *, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._flush(link), timeout_s)
        if self._outbox:
            log.info("MQTT closing with %d faces/event message(s) unsent", len(self._outbox))

    async def _flush(self, link: Link) -> None:
        # The outbox before the snapshots here: at a stop it holds the tracks' `end` events,
        # and a large picture must not use up the little time there is.
        while self._states or self._outbox or self._snapshots:
            if self._states:
                await self._send_latest(self._states, link)
            elif self._outbox:
                await self._send_next_queued(link)
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
        try:
            await link.publish(message)
        except BaseException:
            # Not acknowledged (connection lost, timeout, cancelled): keep it for the next
            # connection. With QoS 1 that may duplicate it; subscribers dedupe on event_id.
            self._outbox.requeue(message)
            raise
