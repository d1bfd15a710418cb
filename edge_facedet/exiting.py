"""How a command's process ends once its work is written: flushed, then at once.

Interpreter shutdown joins threads and runs finalizers: a camera thread stuck in a native
FFmpeg call, or a broker connect in the default executor, would hold `run`'s exit past
systemd's stop timeout, and OpenVINO's objects would be torn down with its threads in no
set order. A detector is never freed before that (its queue holds its callback, a bound
method: a cycle through C++ that Python cannot collect), and a finished `eval` crashed
there once (SIGSEGV after its report); freed any earlier, from one of OpenVINO's threads,
it aborts ("Resource deadlock avoided").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn

__all__ = ["exit_now"]


def exit_now(code: int) -> NoReturn:
    """Flush the logs and standard streams, then end the process without its finalizers."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`| head`)
            stream.flush()
    os._exit(code)
