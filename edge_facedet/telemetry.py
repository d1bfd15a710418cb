"""OpenVINO's usage telemetry, switched off before OpenVINO is first imported.

`import openvino` imports `openvino.tools.ovc`, which starts the `openvino-telemetry`
package (a dependency of the `openvino` wheel) with consent assumed when no consent file
exists: it writes a client id and a usage counter under `~/intel/` and sends a
"general_import" event to Google Analytics from a background thread. An edge service sends
nothing anywhere it was not configured to, and must not need a writable (or any) home
directory for it: on a host where the service's user has no home, the package's
`Path.home()` failed the import, and with HOME=/ it logged three warnings at every start.

OpenVINO imports the package inside `try: ... except ImportError:` and falls back to its
own no-op stub (`openvino.tools.ovc.telemetry_stub`). A `None` entry in `sys.modules` makes
that import raise ImportError, so OpenVINO takes the stub: no consent check, no home
directory, no file, no thread, no connection. The package's own opt-out (a consent file
under the home directory, `opt_in_out --opt_out`) would need the very home directory this
avoids, and would be undone by deleting a file.
"""

from __future__ import annotations

import sys

# The distribution `openvino-telemetry`; OpenVINO imports it under this name.
TELEMETRY_MODULE = "openvino_telemetry"


def disable_openvino_telemetry() -> None:
    """Make `openvino_telemetry` unimportable for this process; call before importing OpenVINO.

    Idempotent. It cannot undo what already ran: call it first thing, before any module that
    imports OpenVINO (the CLI's `main()` does).
    """
    if sys.modules.get(TELEMETRY_MODULE) is None:
        sys.modules[TELEMETRY_MODULE] = None  # type: ignore[assignment]
