"""Backports for the oldest supported Python (3.10): one place for the version checks.

`TaskGroup` (asyncio's from 3.11, the `taskgroup` package before) and `BaseExceptionGroup`
(a builtin from 3.11, the `exceptiongroup` package before) are imported from here.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import TaskGroup
    from builtins import BaseExceptionGroup
else:  # pragma: no cover - exercised on Python 3.10 only
    from exceptiongroup import BaseExceptionGroup
    from taskgroup import TaskGroup

__all__ = ["BaseExceptionGroup", "TaskGroup"]
