"""``python -m tracejit.serve model.tjx --port 8000``: serve an exported function over HTTP."""

from __future__ import annotations

import argparse
import logging
import sys

from .server import DEFAULT_MAX_BODY, serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tracejit.serve", description=__doc__)
    p.add_argument("model", help="an exported function (tj.export(...).save('model.tjx'))")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed at start)")
    p.add_argument("--max-batch", type=int, default=64, help="rows per model call at most (1: no batching)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    p.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY / (1 << 20))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[tracejit serve] %(message)s")
    server = serve(
        args.model,
        args.host,
        args.port,
        max_batch=args.max_batch,
        max_delay=args.max_delay_ms / 1e3,
        max_body=int(args.max_body_mb * (1 << 20)),
    )
    host, port = server.server_address[:2]
    info = server.describe()
    print(
        f"serving {info['name']} on http://{host}:{port} (batching: {info['batching']}, "
        f"max batch {info['max_batch']})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
