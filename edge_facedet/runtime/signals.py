"""The service's signal handlers: SIGTERM and SIGINT stop it, SIGHUP reloads its file."""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

__all__ = ["install_signal_handlers", "remove_signal_handlers"]


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop, handler: Callable[[], None], *, reload: Callable[[], None]
) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, handler)
    # Installed at once: SIGHUP's default action ends the process. One before READY waits
    # until the service runs (the reloader starts then).
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload)


def remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signum)
