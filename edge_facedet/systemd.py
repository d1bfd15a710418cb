"""The systemd notify protocol (READY, RELOADING, WATCHDOG, STATUS, STOPPING), written by hand.

sd_notify(3) is one datagram to the AF_UNIX socket named in $NOTIFY_SOCKET (a leading '@'
means the abstract namespace). Without $NOTIFY_SOCKET every call does nothing, so the
service runs the same outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from edge_facedet.logthrottle import every_power_of_two

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages; a no-op when not started by systemd with Type=notify."""

    def __init__(self, *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]
        elif address.startswith("/"):
            self._address = address
        self._socket: socket.socket | None = None
        self._dropped = 0
        self._reported_errors: set[int | None] = set()
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval_s: float | None = None
        if watchdog_usec.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            # systemd's advice (sd_watchdog_enabled): ping at half the timeout.
            self.watchdog_interval_s = int(watchdog_usec) / 2_000_000

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                # This runs on the event loop: a manager that does not read its socket (hung
                # or busy PID 1) fills the queue, and a blocking send would then freeze the
                # whole service, SIGTERM handling included. A dropped STATUS or WATCHDOG is
                # harmless in comparison (the next one follows within seconds).
                self._socket.settimeout(0.0)
            self._socket.sendto(message.encode(), self._address)
        except BlockingIOError:
            self._dropped += 1
            # Visible at once, without a line per message while it lasts.
            if every_power_of_two(self._dropped):
                log.warning(
                    "sd_notify to %s: the manager's queue is full; %d message(s) dropped",
                    self._address.lstrip("\0"),
                    self._dropped,
                )
        except OSError as exc:
            # The service must keep running if the manager went away; say so once per kind.
            if exc.errno not in self._reported_errors:
                self._reported_errors.add(exc.errno)
                log.warning("sd_notify to %s failed: %s", self._address.lstrip("\0"), exc)

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self, status: str = "") -> None:
        """A reload began; `ready()` ends it. MONOTONIC_USEC lets systemd (253+, with
        Type=notify-reload) match this to the reload it asked for."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
