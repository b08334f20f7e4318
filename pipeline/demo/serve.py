"""A quiet, threaded HTTP server for a local folder, bound to loopback only.

Used by `gld demo` and the tests to serve generated images the way a real image host would,
without any traffic leaving the machine.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files, optionally after `delay_s` (a remote host's latency), counting requests per path."""

    def __init__(self, *args: object, delay_s: float, hits: Counter[str] | None, **kwargs: object) -> None:
        self._delay_s = delay_s
        self._hits = hits
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self._hits is not None:
            with _HITS_LOCK:
                self._hits[self.path] += 1
        if self._delay_s:
            time.sleep(self._delay_s)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        return


_HITS_LOCK = threading.Lock()


@contextmanager
def serve_folder(root: str, delay_s: float = 0.0, hits: Counter[str] | None = None, port: int = 0) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 at `port` (0: a free one); yields the base URL (no trailing
    slash). OSError when the port is taken.

    `delay_s` delays every response; `hits`, when given, counts the requests per path."""
    handler = functools.partial(_QuietHandler, directory=root, delay_s=delay_s, hits=hits)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="gld-serve", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
