"""Does a tracking server answer? One HTTP request with a socket timeout, before a run starts.

A server that accepts connections and never replies would otherwise hold a run at its start for
as long as the tracker's client retries (minutes for MLflow's defaults, W&B's init timeout); a
closed port would cost every retry's back-off. Any HTTP reply, even an error status, counts as
an answer: the tracker's own client reports what is wrong with it.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from urllib.parse import urlparse

__all__ = ["http_silence"]


def http_silence(url: str, timeout: float, path: str = "/") -> str | None:
    """None when the server of ``url`` (http or https) replies to ``GET path`` within
    ``timeout`` seconds (connecting and replying); else why not, in a few words."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None  # not an HTTP server: nothing to probe here
    cls = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    conn = cls(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request("GET", (parsed.path.rstrip("/") + path) or "/")
        conn.getresponse().read(0)
    except ssl.SSLError:
        return None  # it answered (a TLS problem is for the client to report)
    except TimeoutError:
        return f"no reply within {timeout:g} s"
    except ConnectionRefusedError:
        return "connection refused"
    except socket.gaierror as e:
        return f"unknown host ({e.strerror})"
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"[:200]
    finally:
        conn.close()
    return None
