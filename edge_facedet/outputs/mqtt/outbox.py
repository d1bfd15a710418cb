"""What waits for the broker: the bounded faces outbox and the latest retained messages.

Faces messages queue FIFO in an `Outbox` of `mqtt.outbox_size`; when it is full the oldest
is dropped and counted, so a dead broker costs that much memory at most and never slows the
detector down. A message whose publish was not acknowledged goes back to the front.

Retained messages (camera states, Home Assistant discovery) are not queued: `LatestByKey`
keeps the latest per key and which of them this connection has not sent yet; every new
connection marks them all unsent, so a broker that lost its retained store is repaired.
Everything here runs on the event loop; nothing blocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LatestByKey", "Message", "Outbox"]


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish: topic, body, QoS and the retain flag."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False


class Outbox:
    """FIFO of faces messages, bounded: a full outbox drops (and counts) its oldest."""

    def __init__(self, *, maxlen: int, on_drop: Callable[[], None]) -> None:
        self._queue: deque[Message] = deque(maxlen=maxlen)
        self._on_drop = on_drop

    def __len__(self) -> int:
        return len(self._queue)

    def __bool__(self) -> bool:
        return bool(self._queue)

    def append(self, message: Message) -> None:
        if len(self._queue) == self._queue.maxlen:
            self._on_drop()  # deque(maxlen) drops the oldest on append
        self._queue.append(message)

    def popleft(self) -> Message:
        return self._queue.popleft()

    def messages(self) -> list[Message]:
        """What waits, oldest first (an output taking over this one's queue reads it)."""
        return list(self._queue)

    def requeue(self, message: Message) -> None:
        """Put back a message whose publish failed: it is the oldest, so it goes first."""
        if len(self._queue) == self._queue.maxlen:
            # Full: under drop-oldest this message is the one to drop (appendleft on a full
            # deque would silently drop the newest instead).
            self._on_drop()
            return
        self._queue.appendleft(message)


class LatestByKey:
    """The latest retained message per key, and the keys not yet sent (in insertion order)."""

    def __init__(self) -> None:
        self._latest: dict[str, Message] = {}
        self._unsent: dict[str, None] = {}

    def __bool__(self) -> bool:
        """Whether something is unsent."""
        return bool(self._unsent)

    def set(self, key: str, message: Message) -> None:
        """Replace `key`'s message; it is unsent until `sent(key, message)`."""
        self._latest[key] = message
        self._unsent[key] = None

    def next_unsent(self) -> tuple[str, Message]:
        key = next(iter(self._unsent))
        return key, self._latest[key]

    def sent(self, key: str, message: Message) -> None:
        """`message` was acknowledged; a newer one set while it was in flight stays unsent."""
        if self._latest.get(key) is message:
            self._unsent.pop(key, None)

    def discard(self, key: str) -> None:
        """Forget `key`: its message is neither kept nor sent again."""
        self._latest.pop(key, None)
        self._unsent.pop(key, None)

    def items(self) -> list[tuple[str, Message]]:
        return list(self._latest.items())

    def mark_all_unsent(self) -> None:
        """A new connection: the broker may have lost its retained store."""
        for key in self._latest:
            self._unsent[key] = None
