"""tracejit.serve: an exported function over HTTP, with dynamic batching, health and metrics."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.serve import Batcher, ModelServer, rows_are_independent

ROOT = Path(__file__).resolve().parents[1]  # (children import this checkout)
IN, OUT = 6, 4


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(7)
    return rng.standard_normal((IN, OUT)).astype(np.float32), rng.standard_normal(OUT).astype(np.float32)


def reference(x, weights):
    w, b = weights
    z = x.astype(np.float64) @ w + b
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def model_path(weights, tmp_path_factory):
    w, b = (tj.asarray(a) for a in weights)
    path = tmp_path_factory.mktemp("serve") / "model.tjx"
    tj.export(lambda x: F.sigmoid(x @ w + b), tj.spec(("batch", IN), tj.float32), targets=("cpu",)).save(path)
    return path


@pytest.fixture(scope="module")
def server(model_path):
    srv = ModelServer(tj.load(model_path), port=0, max_batch=32, max_delay=0.002, max_body=1 << 16)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _post(conn, body: bytes, ctype: str = "application/json", headers: dict | None = None):
    conn.request("POST", "/predict", body=body, headers={"Content-Type": ctype, **(headers or {})})
    r = conn.getresponse()
    return r.status, r.getheader("Content-Type"), r.read()


def _get(port: int, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_json_and_npy_requests(server, weights, rng):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    x = rng.standard_normal((3, IN)).astype(np.float32)
    status, ctype, body = _post(conn, json.dumps({"input": x.tolist()}).encode())
    assert status == 200 and ctype == "application/json"
    doc = json.loads(body)
    assert doc["shapes"] == [[3, OUT]] and doc["dtypes"] == ["float32"]
    np.testing.assert_allclose(np.array(doc["outputs"][0]), reference(x, weights), rtol=2e-6, atol=1e-7)
    status, ctype, body = _post(conn, _npy(x), "application/x-npy")
    assert status == 200 and ctype == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(body)), reference(x, weights), rtol=2e-6, atol=1e-7)
    conn.close()
    status, health = _get(port, "/health")
    assert (
        status == 200 and health["status"] == "ok" and health["batching"] and health["batch_dim"] == "batch"
    )
    assert health["inputs"] == [{"shape": ["batch", IN], "dtype": "float32"}]


@pytest.mark.parametrize(
    "body, ctype, status, message",
    [
        (b"{not json", "application/json", 400, "bad JSON"),
        (b'{"x": 1}', "application/json", 400, '"inputs"'),
        (json.dumps({"input": [[1.0] * (IN + 1)]}).encode(), "application/json", 400, r"shape (1, 7)"),
        (json.dumps({"input": [[1.0] * IN, [1.0]]}).encode(), "application/json", 400, "not a rectangular"),
        (json.dumps({"input": [["a"] * IN]}).encode(), "application/json", 400, "expected float32"),
        (json.dumps({"input": [1.0] * IN}).encode(), "application/json", 400, "shape (6,)"),
        (_npy(np.zeros((2, IN))), "application/x-npy", 400, "is float64, expected float32"),
        (b"\x93NUMPY garbage", "application/x-npy", 400, "bad .npy"),
        (b"abc", "text/plain", 415, "Content-Type"),
        (b"x" * (1 << 17), "application/json", 413, "over the limit"),
    ],
)
def test_malformed_requests_get_4xx_and_the_server_keeps_serving(
    server, weights, body, ctype, status, message
):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    got, _, reply = _post(conn, body, ctype)
    assert got == status
    assert message in json.loads(reply)["error"]
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    x = np.ones((1, IN), np.float32)
    got, _, reply = _post(conn, json.dumps({"inputs": [x.tolist()]}).encode())
    assert got == 200
    np.testing.assert_allclose(json.loads(reply)["outputs"][0], reference(x, weights), rtol=2e-6, atol=1e-7)
    conn.close()


def test_missing_length_and_unknown_paths(server):
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 411 and "Content-Length" in json.loads(r.read())["error"]
    conn.close()
    assert _get(port, "/nothing")[0] == 404
    assert _get(port, "/predict")[0] == 405


def test_batches_share_one_call_up_to_the_maximum():
    calls = []

    def run(arrays):
        calls.append(arrays[0].shape[0])
        return [arrays[0] * 2, arrays[0].sum(axis=1)]

    b = Batcher(run, batched=True, max_batch=4, max_delay=0.05)
    pending = [b.submit([np.full((1 + (i == 2), 3), float(i))]) for i in range(5)]  # 6 rows in all
    b.start()  # (all five were waiting: batches are [0, 1, 2] = 4 rows, then [3, 4])
    results = [p.wait(10) for p in pending]
    b.stop()
    assert calls == [4, 2]
    for i, (doubled, sums) in enumerate(results):
        rows = 1 + (i == 2)
        np.testing.assert_array_equal(doubled, np.full((rows, 3), 2.0 * i))
        np.testing.assert_array_equal(sums, np.full(rows, 3.0 * i))
    assert b.stats == {"calls": 2, "rows": 6, "largest_batch": 4}


def test_an_error_reaches_every_request_of_its_batch_and_the_worker_goes_on():
    def run(arrays):
        if arrays[0].shape[0] > 1:
            raise RuntimeError("boom")
        return [arrays[0]]

    b = Batcher(run, max_batch=8, max_delay=0.05)
    pending = [b.submit([np.zeros((1, 2))]) for _ in range(3)]
    b.start()
    for p in pending:
        with pytest.raises(RuntimeError, match="boom"):
            p.wait(10)
    assert b.submit([np.ones((1, 2))]).wait(10)[0].tolist() == [[1.0, 1.0]]
    b.stop()


def test_a_function_mixing_rows_is_not_batched(tmp_path, rng):
    path = tmp_path / "centered.tjx"
    tj.export(lambda x: x - x.mean(axis=0), tj.spec(("batch", 3), tj.float64), targets=("cpu",)).save(path)
    fn = tj.load(path)
    assert not rows_are_independent(fn.run_arrays, [rng.standard_normal((3, 3))])
    srv = ModelServer(fn, port=0)
    try:
        assert srv.describe()["batching"] is False
    finally:
        srv.server_close()


def test_no_batching_along_a_dim_when_another_dim_varies(tmp_path):
    path = tmp_path / "rowsum.tjx"
    tj.export(lambda a: a.sum(axis=1), tj.spec(("batch", "seq"), tj.float32), targets=("cpu",)).save(path)
    srv = ModelServer(tj.load(path), port=0)
    try:
        assert srv.describe()["batch_dim"] is None and srv.describe()["batching"] is False
    finally:
        srv.server_close()


def test_load_2000_requests_from_16_clients(server, weights):
    n_clients, per_client = 16, 125
    rng = np.random.default_rng(99)
    inputs = [
        [rng.standard_normal((1 + (k % 3), IN)).astype(np.float32) for k in range(per_client)]
        for _ in range(n_clients)
    ]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    before = _get(server.server_address[1], "/metrics")[1]

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)
        mine = []
        for k, x in enumerate(inputs[c]):
            t0 = time.perf_counter()
            if k % 2:
                status, _, body = _post(conn, _npy(x), "application/x-npy")
                y = np.load(io.BytesIO(body)) if status == 200 else None
            else:
                status, _, body = _post(conn, json.dumps({"input": x.tolist()}).encode())
                y = np.array(json.loads(body)["outputs"][0], np.float32) if status == 200 else None
            mine.append(time.perf_counter() - t0)
            if (
                y is None
                or y.shape != (x.shape[0], OUT)
                or not np.allclose(y, reference(x, weights), rtol=2e-6, atol=1e-7)
            ):
                with lock:
                    failures.append(f"client {c} request {k}: status {status}")
        conn.close()
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    assert failures == []
    assert len(latencies) == n_clients * per_client
    after = _get(server.server_address[1], "/metrics")[1]
    assert after["predictions"] - before["predictions"] == n_clients * per_client
    rows = sum(x.shape[0] for xs in inputs for x in xs)
    assert after["rows"] - before["rows"] == rows
    lat = np.array(latencies) * 1e3
    print(
        f"\n{len(lat)} requests from {n_clients} clients in {wall:.2f} s: {len(lat) / wall:.0f} req/s, "
        f"p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms, "
        f"{after['model_calls'] - before['model_calls']} model calls, largest batch {after['largest_batch']}"
    )


def test_python_m_tracejit_serve(model_path, weights):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracejit.serve", str(model_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving"), line + proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert _get(port, "/health")[1]["status"] == "ok"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        x = np.arange(2 * IN, dtype=np.float32).reshape(2, IN) / 10
        status, _, body = _post(conn, json.dumps({"inputs": [x.tolist()]}).encode())
        conn.close()
        assert status == 200
        np.testing.assert_allclose(
            json.loads(body)["outputs"][0], reference(x, weights), rtol=2e-6, atol=1e-7
        )
        metrics = _get(port, "/metrics")[1]
        assert metrics["predictions"] == 1 and metrics["latency_ms"]["count"] == 1
        assert metrics["responses"]["200"] == 2  # (and the /health request)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_s1_benchmark_is_opt_in_and_its_serving_part_runs(tmp_path):
    from benchmarks import serving
    from benchmarks.__main__ import selected

    assert selected("S1") == ["S1"] and "S1" not in selected(None)
    path = tmp_path / "mlp.tjx"
    tj.export(
        serving._tj_function(), tj.spec(("batch", serving.SIZES[0]), tj.float32), targets=("cpu",)
    ).save(path)
    got = serving.run_serving(str(path), max_batch=8, clients=2, per_client=5)
    assert got["requests"] == 10 and got["errors"] == 0 and got["model_calls"] <= 10


def test_a_function_of_two_arguments_over_json(tmp_path, rng):
    @tj.jit
    def f(x, b):
        return tj.tanh(x * 1.5 + b).sum(axis=-1), x.max(axis=1)

    path = tmp_path / "two.tjx"
    tj.export(f, tj.spec(("batch", 5), tj.float64), tj.spec((5,), tj.float64), targets=("cpu",)).save(path)
    srv = ModelServer(tj.load(path), port=0, max_batch=16)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
        x, b = rng.standard_normal((4, 5)), rng.standard_normal(5)
        status, _, body = _post(conn, json.dumps({"inputs": [x.tolist(), b.tolist()]}).encode())
        assert status == 200
        doc = json.loads(body)
        np.testing.assert_allclose(doc["outputs"][0], np.tanh(x * 1.5 + b).sum(-1), rtol=1e-12)
        np.testing.assert_array_equal(doc["outputs"][1], x.max(1))
        # b has no batch dim: requests cannot share a call
        assert srv.describe()["batching"] is False
        status, _, body = _post(conn, _npy(x), "application/x-npy")
        assert status == 400 and "takes 2" in json.loads(body)["error"]
        status, _, body = _post(conn, json.dumps({"inputs": [x.tolist()]}).encode())
        assert status == 400 and "list of 2 arrays" in json.loads(body)["error"]
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
