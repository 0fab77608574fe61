"""An HTTP server for an exported function (``python -m tracejit.serve model.tjx --port 8000``).

Endpoints:

* ``POST /predict``: a JSON body ``{"inputs": [arg0, arg1, ...]}`` (nested lists; ``{"input": x}``
  for a function of one argument) answered with ``{"outputs": [...], "shapes": [...],
  "dtypes": [...]}``; or a raw ``.npy`` body (``Content-Type: application/x-npy``, functions of
  one argument) answered with the ``.npy`` of the only result (``.npz`` when there are several).
  Arguments carry their batch dimension (axis 0): a request may hold several rows.
* ``GET /health``: ``{"status": "ok", ...}`` with the function's signature and batching settings.
* ``GET /metrics``: request counts by status, model calls and rows (the batching), and latency
  percentiles over the last requests.

Malformed requests (bad JSON, wrong shape or dtype, a body over the limit, no length) get a 4xx
with a message naming what was wrong; the server goes on serving.  Requests run through a
:class:`tracejit.serve.batching.Batcher` (one model call per batch).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ..export import ExportError, LoadedFunction
from .batching import Batcher, rows_are_independent

log = logging.getLogger("tracejit.serve")

DEFAULT_MAX_BODY = 16 << 20
LATENCY_WINDOW = 10_000  # requests the percentiles are computed over
NPY_TYPES = ("application/x-npy", "application/octet-stream")


class BadRequest(Exception):
    """A request the client must fix (answered with ``status`` and the message)."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


class Metrics:
    """Counters and a window of latencies, safe to update from handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.by_status: dict[str, int] = {}
        self.predictions = 0  # answered /predict requests
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.started = time.time()

    def record(self, status: int, seconds: float, timed: bool) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1
            if timed:
                self.predictions += 1
                self._latencies.append(seconds)

    def snapshot(self, batcher: Batcher) -> dict[str, Any]:
        with self._lock:
            lat = np.array(self._latencies) * 1e3
            out: dict[str, Any] = {
                "requests": self.requests,
                "predictions": self.predictions,
                "responses": dict(self.by_status),
                "uptime_s": round(time.time() - self.started, 3),
            }
        out["model_calls"] = batcher.stats["calls"]
        out["rows"] = batcher.stats["rows"]
        out["largest_batch"] = batcher.stats["largest_batch"]
        out["latency_ms"] = (
            {"count": int(lat.size)}
            if lat.size == 0
            else {
                "count": int(lat.size),
                "mean": float(lat.mean()),
                "p50": float(np.percentile(lat, 50)),
                "p90": float(np.percentile(lat, 90)),
                "p99": float(np.percentile(lat, 99)),
                "max": float(lat.max()),
            }
        )
        return out


def batch_symbol(fn: LoadedFunction) -> str | None:
    """The symbolic dimension requests can be batched along: axis 0 of every argument and every
    result, whose other dims are all fixed (None when there is none)."""
    for name in fn.symbols:
        ins = [shape for shape, _ in fn.inputs]
        outs = fn.result_shapes
        # (other dims fixed: requests with different sizes of another symbol cannot be joined)
        if all(s and s[0] == name and all(isinstance(d, int) for d in s[1:]) for s in ins + outs):
            return name
    return None


class ModelServer(ThreadingHTTPServer):
    """A threading HTTP server for one loaded function, batching requests along its batch dim."""

    daemon_threads = True

    def __init__(
        self,
        fn: LoadedFunction,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_batch: int = 64,
        max_delay: float = 0.002,
        max_body: int = DEFAULT_MAX_BODY,
        timeout: float = 60.0,
    ) -> None:
        self.fn, self.max_body, self.request_timeout = fn, max_body, timeout
        self.metrics = Metrics()
        self.batch_dim = batch_symbol(fn)
        batched = self.batch_dim is not None and max_batch > 1 and self._probe_independence()
        self.batcher = Batcher(fn.run_arrays, batched, max_batch, max_delay).start()
        super().__init__((host, port), RequestHandler)

    def _probe_independence(self) -> bool:
        rng = np.random.default_rng(0)
        examples = []
        for shape, dtype in self.fn.inputs:
            dims = [3 if d == self.batch_dim else 2 if isinstance(d, str) else d for d in shape]
            a = rng.integers(0, 2, dims) if np.dtype(dtype).kind in "biu" else rng.standard_normal(dims)
            examples.append(a.astype(dtype))
        if rows_are_independent(self.fn.run_arrays, examples):
            return True
        log.warning(
            "serve: %s mixes rows of a batch (it reduces across %r); requests run one at a time",
            self.fn.name,
            self.batch_dim,
        )
        return False

    def server_close(self) -> None:
        super().server_close()
        self.batcher.stop()

    def describe(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "name": self.fn.name,
            "inputs": [{"shape": list(s), "dtype": np.dtype(d).name} for s, d in self.fn.inputs],
            "batch_dim": self.batch_dim,
            "batching": self.batcher.batched,
            "max_batch": self.batcher.max_batch,
            "max_delay_ms": self.batcher.max_delay * 1e3,
        }


def _json_arrays(body: bytes, fn: LoadedFunction) -> list[np.ndarray]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"bad JSON: {e}") from None
    if not isinstance(doc, dict) or ("inputs" in doc) == ("input" in doc):
        raise BadRequest(
            'the JSON body must be an object with "inputs" (a list, one per argument) or "input"'
        )
    values = doc["inputs"] if "inputs" in doc else [doc["input"]]
    if not isinstance(values, list) or len(values) != len(fn.inputs):
        raise BadRequest(f'"inputs" must be a list of {len(fn.inputs)} arrays')
    arrays = []
    for i, (v, (_, dtype)) in enumerate(zip(values, fn.inputs)):
        try:
            a = np.array(v)
        except ValueError:
            raise BadRequest(f"input {i} is not a rectangular array") from None
        kind = np.dtype(dtype).kind
        ok = a.dtype.kind in ("b" if kind == "b" else "biu" if kind in "iu" else "biuf")
        if not ok or a.dtype == object:
            raise BadRequest(
                f"input {i}: expected {np.dtype(dtype).name} values, got {a.dtype.name} "
                f"({'not a rectangular array of numbers' if a.dtype == object else 'wrong kind'})"
            )
        if kind in "iu" and a.size and (a.min() < np.iinfo(dtype).min or a.max() > np.iinfo(dtype).max):
            raise BadRequest(f"input {i}: values outside {np.dtype(dtype).name}")
        arrays.append(a.astype(dtype))
    return arrays


def _npy_array(body: bytes, fn: LoadedFunction) -> list[np.ndarray]:
    if len(fn.inputs) != 1:
        raise BadRequest(f"a .npy body holds one array; this function takes {len(fn.inputs)}: send JSON")
    try:
        a = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadRequest(f"bad .npy body: {e}") from None
    if not isinstance(a, np.ndarray):
        raise BadRequest("the body is not a .npy array")
    return [a]


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server: ModelServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (BaseHTTPRequestHandler's name)
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str, started: float, timed: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.server.metrics.record(status, time.perf_counter() - started, timed)

    def _send_json(self, status: int, doc: Any, started: float, timed: bool = False) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", started, timed)

    def _error(self, status: int, message: str, started: float) -> None:
        self._send_json(status, {"error": message}, started)

    def do_GET(self) -> None:
        started = time.perf_counter()
        if self.path == "/health":
            self._send_json(200, self.server.describe(), started)
        elif self.path == "/metrics":
            self._send_json(200, self.server.metrics.snapshot(self.server.batcher), started)
        elif self.path in ("/predict", "/"):
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "POST a request body to /predict", started)
        else:
            self._error(
                HTTPStatus.NOT_FOUND, f"no endpoint {self.path}; try /predict, /health, /metrics", started
            )

    def do_POST(self) -> None:
        started = time.perf_counter()
        if self.path not in ("/predict", "/"):
            self.close_connection = True  # (its body is left unread)
            self._error(HTTPStatus.NOT_FOUND, f"no endpoint {self.path}; POST to /predict", started)
            return
        try:
            body = self._read_body()
            ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
            if ctype in NPY_TYPES:
                arrays = _npy_array(body, self.server.fn)
            elif ctype == "application/json":
                arrays = _json_arrays(body, self.server.fn)
            else:
                raise BadRequest(
                    f"Content-Type {ctype!r}: send application/json or application/x-npy",
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                )
            try:
                self.server.fn.sizes(arrays)
            except ExportError as e:
                raise BadRequest(str(e)) from None
            results = self.server.batcher.submit(arrays).wait(self.server.request_timeout)
        except BadRequest as e:
            self._error(e.status, str(e), started)
            return
        except Exception as e:  # the model failed: the client is told, the server goes on
            log.exception("serve: a request failed")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}", started)
            return
        if ctype in NPY_TYPES:
            buf = io.BytesIO()
            if len(results) == 1:
                np.save(buf, results[0], allow_pickle=False)
            else:
                np.savez(buf, *results)
            kind = "application/x-npy" if len(results) == 1 else "application/x-npz"
            self._send(200, buf.getvalue(), kind, started, timed=True)
        else:
            self._send_json(
                200,
                {
                    "outputs": [r.tolist() for r in results],
                    "shapes": [list(r.shape) for r in results],
                    "dtypes": [r.dtype.name for r in results],
                },
                started,
                timed=True,
            )

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise BadRequest("a Content-Length header is required", HTTPStatus.LENGTH_REQUIRED)
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise BadRequest(f"bad Content-Length {length!r}") from None
        if n > self.server.max_body:
            self.close_connection = True  # (the body is not read)
            raise BadRequest(
                f"body of {n} bytes is over the limit of {self.server.max_body} bytes",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        body = self.rfile.read(n)
        if len(body) != n:
            self.close_connection = True
            raise BadRequest(f"body ended after {len(body)} of {n} bytes")
        return body


def serve(path: str, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> ModelServer:
    """Load ``path`` and return a started-but-not-serving :class:`ModelServer` (call
    ``serve_forever()``; ``server_address`` has the port when ``port`` was 0)."""
    from ..export import load

    return ModelServer(load(path), host, port, **options)
