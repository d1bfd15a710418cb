"""A missing home directory as one line and exit 2, instead of a traceback.

Nothing in the service needs a home directory (the unit gives it one anyway, its cache
directory, and OpenVINO's telemetry, which wanted one, is off: see telemetry.py). Something
still may: the default models root is under `~/.local/share` when neither
`EDGE_FACEDET_MODELS` nor `--models-dir`/`model.dir` names one. Python then raises
`RuntimeError("Could not determine home directory.")` when HOME is unset and the user
database has no entry for the uid (a DynamicUser= on a host without libnss-systemd, a
container run with an arbitrary uid). That is the environment's configuration, so it is
exit 2 with the fix named, and systemd does not restart it (RestartPreventExitStatus=2).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import TextIO


def home_directory() -> Path | None:
    """The home directory Python finds (HOME, else the user database), or None."""
    try:
        return Path.home()
    except RuntimeError:
        return None


def missing_home_message() -> str:
    return (
        f"edge-facedet: no home directory: HOME is not set and uid {os.getuid()} has no entry "
        "in the user database; set HOME to a directory this user may write (the systemd unit "
        "sets HOME=/var/cache/edge-facedet) or EDGE_FACEDET_MODELS to the models folder"
    )


@contextmanager
def exit_on_missing_home(*, code: int, err: TextIO | None = None) -> Iterator[None]:
    """Turn the RuntimeError of an undeterminable home into one line on `err` and exit `code`.

    Any other RuntimeError, or one raised while a home directory is known, propagates.
    """
    try:
        yield
    except RuntimeError:
        if home_directory() is not None:
            raise
        (err or sys.stderr).write(missing_home_message() + "\n")
        raise SystemExit(code) from None
