"""moto's S3 server (``ThreadedMotoServer``) started with a deadline.

``ThreadedMotoServer.start()`` waits without a limit for its thread to bind the port; when
binding fails (the port was taken between choosing and binding it) the thread dies and
``start()`` never returns. Here the start runs in a thread of its own and the server must
accept a TCP connection within the deadline, or the error says which it did not do.
"""

from __future__ import annotations

import socket
import threading

from spoofray.testing.waiting import wait_for

MOTO_START_S = 60.0  # a werkzeug server binds in well under 1 s; 60 s covers a loaded CI box


def start_moto_server(port: int, *, timeout_s: float = MOTO_START_S, **kwargs):
    """Start a ``ThreadedMotoServer`` on 127.0.0.1:``port`` and return it once it accepts
    connections; ``kwargs`` go to ``ThreadedMotoServer``. Raises
    :class:`~spoofray.testing.waiting.WaitTimeout` naming the port when it does not."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, **kwargs)
    starter = threading.Thread(target=server.start, daemon=True, name=f"moto-start-{port}")
    starter.start()
    wait_for(lambda: _accepts(port), timeout_s=timeout_s, poll_s=0.1,
             what=f"moto S3 server accepting connections on 127.0.0.1:{port}")
    starter.join(timeout=timeout_s)
    return server


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False
