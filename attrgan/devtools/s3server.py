"""A local S3 endpoint on 127.0.0.1 for the demo, `reproduce` and the tests: moto's S3 app alone.

moto's `ThreadedMotoServer` serves every AWS service through a dispatcher that works out the
service from each request's host (a third of a small GET's CPU) and logs a line per request (a
seventh). The demo reads each training crop as its own object, thousands per network, so serving
the S3 app alone, without the request log, answers about twice the requests per second on the same
machine (docs/DESIGN.md, "Facts learned the hard way").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_s3_server(*, threaded: bool = True) -> Iterator[str]:
    """Serve an empty in-memory S3 on a free port of 127.0.0.1; yields its endpoint URL.

    threaded=False answers one request at a time: moto checks a conditional write's condition and
    then writes, with no lock between, where S3 does both at once; served one at a time, racing
    conditional writes behave as on S3."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from moto.server import create_backend_app
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):  # keeps moto's header handling, drops the per-request log
        def log_request(self, *args: object, **kwargs: object) -> None:
            pass

    # Port 0: the kernel picks a free port at bind time, so no other process can take it between.
    server = make_server("127.0.0.1", 0, create_backend_app("s3"), threaded=threaded, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="local-s3", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
