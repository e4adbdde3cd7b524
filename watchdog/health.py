"""``sd-watchdog health``: ask the running daemon's ``/healthz`` (for exec probes and the
container HEALTHCHECK). Stdlib only, so the probe starts fast.
"""

from __future__ import annotations

import http.client
import sys

from watchdog.settings import Settings

# A wildcard bind is asked on loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def check_health(settings: Settings, *, timeout: float = 3.0) -> int:
    """0 when ``/healthz`` answers 200, else 1 (also when the server is disabled)."""
    address = settings.server.address
    if address is None:
        sys.stderr.write("sd-watchdog: the HTTP server is disabled ([server] listen = '')\n")
        return 1
    host, port = address
    host = _WILDCARDS.get(host, host)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read(4096).decode("utf-8", "replace").strip()
    except OSError as exc:
        sys.stderr.write(f"sd-watchdog: unhealthy: cannot reach {host}:{port}: {exc}\n")
        return 1
    finally:
        conn.close()
    if response.status == 200:
        sys.stdout.write((body or "ok") + "\n")
        return 0
    sys.stderr.write(f"sd-watchdog: unhealthy: /healthz answered {response.status}: {body}\n")
    return 1
