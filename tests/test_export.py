"""tj.export / tj.load: one file serves every batch size, runs without source or tracing, and
refuses damaged files and files built for another machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit import export_format as fmt
from tracejit.export import ExportError, ExportShapeError

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]  # (children import this checkout)
IN, HID, OUT = 12, 16, 5


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(1234)
    return {
        "w1": rng.standard_normal((IN, HID)).astype(np.float32) * 0.3,
        "b1": rng.standard_normal(HID).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((HID, OUT)).astype(np.float32) * 0.3,
    }


def mlp_reference(x, w):
    """float64 NumPy reference of :func:`make_mlp`'s function."""
    h = np.maximum(x.astype(np.float64) @ w["w1"] + w["b1"], 0)
    logits = h @ w["w2"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), h.mean(axis=0)


def make_mlp(w):
    w1, b1, w2 = (tj.asarray(w[k]) for k in ("w1", "b1", "w2"))

    def mlp(x):
        h = F.relu(x @ w1 + b1)
        return {"probs": F.softmax(h @ w2, axis=-1), "mean_hidden": h.mean(axis=0)}

    return mlp


@pytest.fixture(scope="module")
def mlp_file(weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "mlp.tjx"
    exp = tj.export(make_mlp(weights), tj.spec(("batch", IN), tj.float32))
    exp.save(path)
    return path, exp


@pytest.mark.parametrize("batch", [1, 2, 37, 300])
def test_one_export_serves_every_batch_size(mlp_file, weights, batch, rng):
    path, _ = mlp_file
    f = tj.load(path)
    x = rng.standard_normal((batch, IN)).astype(np.float32)
    out = f(x)
    probs, mean_hidden = mlp_reference(x, weights)
    np.testing.assert_allclose(out["probs"].numpy(), probs, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(out["mean_hidden"].numpy(), mean_hidden, rtol=2e-5, atol=1e-6)
    assert out["probs"].dtype == tj.float32 and out["probs"].shape == (batch, OUT)
    # the same as the function run eagerly and compiled
    mlp = make_mlp(weights)
    eager = mlp(tj.asarray(x))
    compiled = tj.jit(mlp)(tj.asarray(x))
    np.testing.assert_allclose(out["probs"].numpy(), eager["probs"].numpy(), rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(out["probs"].numpy(), compiled["probs"].numpy())
    np.testing.assert_array_equal(out["mean_hidden"].numpy(), compiled["mean_hidden"].numpy())
    # and as PyTorch
    tw = {k: torch.from_numpy(v) for k, v in weights.items()}
    th = torch.relu(torch.from_numpy(x) @ tw["w1"] + tw["b1"])
    np.testing.assert_allclose(
        out["probs"].numpy(), torch.softmax(th @ tw["w2"], -1).numpy(), rtol=1e-5, atol=1e-6
    )


def test_the_file_holds_graph_program_code_ptx_and_parameters(mlp_file):
    path, exp = mlp_file
    file = fmt.read(path)
    h = file.header
    assert h["symbols"] == ["batch"] and h["inputs"] == [{"shape": ["batch", IN], "dtype": "float32"}]
    assert "matmul" in h["graph"] and "softmax" not in h["graph"]  # primitives, optimized
    assert [p["shape"] for p in h["params"]] == [[IN, HID], [HID], [HID, OUT]]
    assert set(h["cpu"]["objects"]) == set(h["cpu"]["kernels"]) and h["cpu"]["objects"]
    assert all(f"object:{k}" in file.blobs for k in h["cpu"]["objects"])
    assert any(name.startswith("gemm") for name in h["cpu"]["modules"])
    assert h["cuda"]["ptx"] and all(file.blobs[f"ptx:{k}"].startswith(b"//") for k in h["cuda"]["ptx"])
    assert h["target"] == fmt.host_target()


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="needs ptxas")
def test_the_files_ptx_assembles(mlp_file, tmp_path):
    file = fmt.read(mlp_file[0])
    for key, meta in file.header["cuda"]["ptx"].items():
        src = tmp_path / f"{key}.ptx"
        src.write_bytes(file.blobs[f"ptx:{key}"])
        r = subprocess.run(
            ["ptxas", f"-arch={meta['arch']}", str(src), "-o", str(tmp_path / "k.cubin")],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr


def test_a_fresh_process_runs_it_without_source_tracing_or_compiling(mlp_file, weights, tmp_path, rng):
    x = rng.standard_normal((7, IN)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent("""
        import sys, numpy as np
        import tracejit as tj, codegen.cpu, tracejit.jit
        def forbidden(*a, **k):
            raise AssertionError("traced or compiled while loading an export")
        codegen.cpu.assemble = codegen.cpu.compile_kernel = tracejit.jit.trace_function = forbidden
        f = tj.load(sys.argv[1])
        out = f(np.load(sys.argv[2]))
        np.save(sys.argv[3], out["probs"].numpy())
    """)
    env = {**os.environ, "TRACEJIT_DISABLE_CACHE": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", script, str(mlp_file[0]), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), mlp_reference(x, weights)[0], rtol=2e-5, atol=1e-6
    )


def test_two_symbolic_dims_and_a_quadratic_size(rng, tmp_path):
    # attention-like scores over a symbolic sequence: seq * seq sizes, batch * seq * seq bytes
    def attend(q, k):
        s = q @ k.mT * 0.5
        return F.softmax(s, axis=-1).sum(axis=1)

    exp = tj.export(
        attend,
        tj.spec(("batch", "seq", 4), tj.float64),
        tj.spec(("batch", "seq", 4), tj.float64),
        targets=("cpu",),
    )
    exp.save(tmp_path / "att.tjx")
    f = tj.load(tmp_path / "att.tjx")
    for b, n in ((1, 1), (2, 9), (4, 30)):
        q, k = rng.standard_normal((b, n, 4)), rng.standard_normal((b, n, 4))
        s = q @ np.swapaxes(k, 1, 2) * 0.5
        e = np.exp(s - s.max(-1, keepdims=True))
        np.testing.assert_allclose(
            f(q, k).numpy(), (e / e.sum(-1, keepdims=True)).sum(1), rtol=1e-12, atol=1e-12
        )
    with pytest.raises(ExportError, match="'seq' = 3"):
        f(np.zeros((2, 3, 4)), np.zeros((2, 5, 4)))


def test_bad_arguments_are_named(mlp_file):
    f = tj.load(mlp_file[0])
    with pytest.raises(ExportError, match="argument 0 is float64, expected float32"):
        f(np.zeros((3, IN)))
    with pytest.raises(ExportError, match=r"argument 0 has shape \(3, 11\), expected \(batch, 12\)"):
        f(np.zeros((3, IN - 1), np.float32))
    with pytest.raises(ExportError, match="takes 1 arguments, got 2"):
        f(np.zeros((3, IN), np.float32), np.zeros((3, IN), np.float32))
    with pytest.raises(ExportError, match="at least 1"):
        f(np.zeros((0, IN), np.float32))


def test_export_refuses_what_it_cannot_express(weights):
    with pytest.raises(ExportShapeError, match="structure depends on a symbolic dimension"):
        tj.export(lambda x: x * 2 if x.shape[0] > 4 else x + 1, tj.spec(("n", 3)), targets=("cpu",))
    counter = tj.zeros((3,))

    def with_side_effect(x):
        counter[...] = counter + x.sum(axis=0)
        return x * 2

    with pytest.raises(ExportError, match="updates tensors in place"):
        tj.export(with_side_effect, tj.spec(("n", 3)), targets=("cpu",))
    with pytest.raises(ExportError, match="pass tj.spec"):
        tj.export(lambda x: x, np.zeros(3))
    with pytest.raises(ValueError, match="non-negative ints or names"):
        tj.spec((-1, 3))
    with pytest.raises(ValueError, match="not a name"):
        tj.spec(("two words", 3))
    with pytest.raises(TypeError, match="only tj.export takes them"):
        tj.jit(lambda x: x).lower(tj.spec(("n", 3)))


# --------------------------------------------------------------------------- damaged and foreign files


def _rewrite(src, dst, edit):
    """Decode ``src``, let ``edit`` change its header, write it with a valid digest."""
    file = fmt.decode(src.read_bytes(), str(src))
    header = {k: v for k, v in file.header.items() if k != "blobs"}
    edit(header)
    dst.write_bytes(fmt.encode(header, file.blobs))
    return dst


def test_a_valid_rewrite_still_loads(mlp_file, tmp_path):
    # (so the refusals below are caused by the edits alone)
    path = _rewrite(mlp_file[0], tmp_path / "same.tjx", lambda h: None)
    assert tj.load(path)(np.ones((2, IN), np.float32))["probs"].shape == (2, OUT)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h["target"]["features"].append("avx512-imaginary"), "lacks: avx512-imaginary"),
        (lambda h: h["target"].update(triple="riscv64-unknown-linux-gnu"), "built for target 'riscv64"),
        (lambda h: h["target"].update(codegen="cpu-0"), "made by code generator 'cpu-0'"),
        (lambda h: h.pop("target"), "no target description"),
        (lambda h: h["cpu"]["objects"].popitem(), "no object code for 1 kernels"),
    ],
)
def test_files_for_another_machine_are_refused(mlp_file, tmp_path, edit, message):
    path = _rewrite(mlp_file[0], tmp_path / "edited.tjx", edit)
    with pytest.raises(fmt.ExportFormatError, match=message):
        tj.load(path)


def test_damaged_files_are_refused(mlp_file, tmp_path):
    data = mlp_file[0].read_bytes()
    cases = {
        "truncated.tjx": data[: len(data) // 2],
        "flipped.tjx": data[:5000] + bytes([data[5000] ^ 1]) + data[5001:],
        "short.tjx": data[:10],
        "empty.tjx": b"",
        "magic.tjx": b"NOTATJX!" + data[8:],
        "version.tjx": data[:8] + (99).to_bytes(4, "little") + data[12:],
    }
    expected = {
        "truncated.tjx": "digest mismatch",
        "flipped.tjx": "digest mismatch",
        "short.tjx": "truncated",
        "empty.tjx": "bad magic",
        "magic.tjx": "bad magic",
        "version.tjx": "format version 99",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(fmt.ExportFormatError, match=expected[name]):
            tj.load(tmp_path / name)
    with pytest.raises(fmt.ExportFormatError, match="cannot read it"):
        tj.load(tmp_path / "missing.tjx")


def test_damaged_object_code_with_a_valid_digest_is_refused_before_linking(mlp_file, tmp_path):
    file = fmt.decode(mlp_file[0].read_bytes(), "x")
    header = {k: v for k, v in file.header.items() if k != "blobs"}
    blobs = dict(file.blobs)
    key = next(iter(header["cpu"]["objects"]))
    # (a symbol not yet linked in this process, so the object is validated, not skipped)
    header["cpu"]["objects"] = {key: header["cpu"]["objects"][key]}
    blobs[f"object:{key}"] = b"\x7fELF" + b"\0" * 60
    (tmp_path / "obj.tjx").write_bytes(fmt.encode(header, blobs))
    with pytest.raises(fmt.ExportFormatError, match="refused its object code"):
        tj.load(tmp_path / "obj.tjx")


def test_save_is_atomic_and_replaces(mlp_file, tmp_path):
    target = tmp_path / "model.tjx"
    target.write_bytes(b"old")
    mlp_file[1].save(target)
    assert target.read_bytes() == mlp_file[0].read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["model.tjx"]
    header = json.loads(target.read_bytes()[20 : 20 + int.from_bytes(target.read_bytes()[12:20], "little")])
    assert header["name"] == "mlp"


# --------------------------------------------------------------------------- a shared library for C

C_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "mlp.h"
/* mlp <batch> <input file> <output file>: runs the exported function, writes each output */
int main(int argc, char **argv) {
  if (argc != 4) return 2;
  int64_t sizes[MLP_N_SIZES] = {atoll(argv[1])};
  size_t n_in = (size_t)sizes[0] * %(IN)d;
  float *x = malloc(n_in * sizeof(float));
  FILE *f = fopen(argv[2], "rb");
  if (!f || fread(x, sizeof(float), n_in, f) != n_in) return 3;
  fclose(f);
  void *outs[MLP_N_OUTPUTS];
  size_t counts[MLP_N_OUTPUTS];
  const int ndim[MLP_N_OUTPUTS] = {MLP_OUTPUT_0_NDIM, MLP_OUTPUT_1_NDIM};
  for (int i = 0; i < MLP_N_OUTPUTS; i++) {
    int64_t shape[8];
    if (mlp_output_shape(sizes, i, shape)) return 4;
    counts[i] = 1;
    for (int d = 0; d < ndim[i]; d++) counts[i] *= (size_t)shape[d];
    outs[i] = malloc(counts[i] * sizeof(float));
  }
  if (mlp_output_shape(sizes, MLP_N_OUTPUTS, NULL) != -1) return 5;
  const void *ins[1] = {x};
  if (mlp_run(sizes, ins, outs)) return 6;
  FILE *o = fopen(argv[3], "wb");
  for (int i = 0; i < MLP_N_OUTPUTS; i++) fwrite(outs[i], sizeof(float), counts[i], o);
  fclose(o);
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_save_library_is_callable_from_c(mlp_file, weights, tmp_path, rng):
    header = mlp_file[1].save_library(tmp_path / "mlp.so")
    text = header.read_text()
    assert header == tmp_path / "mlp.h" and "int mlp_run(" in text
    assert "output 0: float32, result['mean_hidden']" in text and "output 1: float32, result['probs']" in text
    (tmp_path / "main.c").write_text(C_DRIVER % {"IN": IN})
    r = subprocess.run(
        [
            "cc",
            "-O1",
            str(tmp_path / "main.c"),
            "-o",
            str(tmp_path / "main"),
            f"-I{tmp_path}",
            str(tmp_path / "mlp.so"),
            f"-Wl,-rpath,{tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for batch in (1, 37):
        x = rng.standard_normal((batch, IN)).astype(np.float32)
        x.tofile(tmp_path / "x.bin")
        r = subprocess.run(
            [str(tmp_path / "main"), str(batch), str(tmp_path / "x.bin"), str(tmp_path / "y.bin")],
            capture_output=True,
            text=True,
            env={},
        )  # (no Python anywhere near it)
        assert r.returncode == 0, (r.returncode, r.stderr)
        y = np.fromfile(tmp_path / "y.bin", np.float32)
        probs, mean_hidden = mlp_reference(x, weights)  # (outputs in key order: mean_hidden, probs)
        np.testing.assert_allclose(y[:HID], mean_hidden, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(y[HID:].reshape(batch, OUT), probs, rtol=2e-5, atol=1e-6)


def test_save_library_refuses_host_steps(tmp_path):
    exp = tj.export(lambda x: tj.sort(x, axis=-1) * 2, tj.spec(("n", 3)), targets=("cpu",))
    with pytest.raises(ExportError, match="host step 'sort'"):
        exp.save_library(tmp_path / "sorted.so")


def test_a_module_exports_in_eval_mode_only(rng, tmp_path):
    model = tj.nn.Sequential(tj.nn.Linear(6, 8), tj.nn.ReLU(), tj.nn.Dropout(0.5), tj.nn.Linear(8, 3))
    with pytest.raises(ExportError, match=r"model.eval\(\)"):  # dropout draws from the generator
        tj.export(model, tj.spec(("batch", 6)), targets=("cpu",))
    model.eval()
    tj.export(model, tj.spec(("batch", 6)), targets=("cpu",)).save(tmp_path / "seq.tjx")
    x = rng.standard_normal((5, 6)).astype(np.float32)
    with tj.no_grad():
        expected = model(tj.asarray(x)).numpy()
    np.testing.assert_array_equal(tj.load(tmp_path / "seq.tjx")(x).numpy(), expected)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["slot_nbytes"].__setitem__(p["steps"][0]["outputs"][0][0], 4), "reaches outside slot"),
        (lambda p: p["steps"][0].__setitem__("launch", "0" * 24), "which it does not hold"),
        (lambda p: p["slot_dtypes"].__setitem__(0, "int32"), "not the declared arguments"),
        (lambda p: p.pop("steps"), "bad program"),
    ],
)
def test_a_program_that_does_not_fit_its_buffers_is_refused(mlp_file, tmp_path, edit, message):
    def change(h):
        steps = h["cpu"]["program"]["steps"]
        if "launch" not in steps[0]:  # (the first kernel launch first)
            steps.insert(0, steps.pop(next(i for i, s in enumerate(steps) if "launch" in s)))
        edit(h["cpu"]["program"])

    with pytest.raises(fmt.ExportFormatError, match=message):
        tj.load(_rewrite(mlp_file[0], tmp_path / "bad.tjx", change))


def test_an_attention_block_with_a_causal_mask(rng, tmp_path):
    # (its buffer plan pairs buffers by size: it differs between sizes and is made again at load)
    d = 8
    wq, wk, wv = (rng.standard_normal((d, d)) * 0.3 for _ in range(3))
    tq, tk, tv = (tj.asarray(w.astype(np.float32)) for w in (wq, wk, wv))
    norm = tj.nn.LayerNorm(d)
    norm.eval()

    def block(x):
        h = norm(x)
        s = (h @ tq) @ (h @ tk).mT * (1 / np.sqrt(d))
        n = x.shape[1]
        s = tj.where(tj.tril(tj.ones((n, n))) > 0, s, -1e9)
        return x + F.softmax(s, axis=-1) @ (h @ tv)

    tj.export(block, tj.spec(("batch", "seq", d), tj.float32), targets=("cpu",)).save(tmp_path / "b.tjx")
    f = tj.load(tmp_path / "b.tjx")
    for b, n in ((1, 1), (2, 17), (3, 40)):
        x = rng.standard_normal((b, n, d)).astype(np.float32)
        x64 = x.astype(np.float64)
        h = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
        s = (h @ wq) @ np.swapaxes(h @ wk, 1, 2) / np.sqrt(d)
        s = np.where(np.tril(np.ones((n, n))) > 0, s, -1e9)
        p = np.exp(s - s.max(-1, keepdims=True))
        expected = x64 + (p / p.sum(-1, keepdims=True)) @ (h @ wv)
        np.testing.assert_allclose(f(x).numpy(), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(f(x).numpy(), block(tj.asarray(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_concatenations_and_pads_along_fixed_dims_export(rng, tmp_path):
    # (a Piecewise kernel reads each operand only inside its piece: the bounds check knows)
    def f(x):
        return tj.concat([x, x * 2], axis=1).sum(axis=1) + tj.pad(x, ((0, 0), (1, 1)))[:, :6].sum(axis=1)

    tj.export(f, tj.spec(("n", 6), tj.float64), targets=("cpu",)).save(tmp_path / "c.tjx")
    g = tj.load(tmp_path / "c.tjx")
    for n in (1, 33):
        x = rng.standard_normal((n, 6))
        expected = 3 * x.sum(1) + np.pad(x, ((0, 0), (1, 1)))[:, :6].sum(1)
        np.testing.assert_allclose(g(x).numpy(), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ExportShapeError, match="different kernels: a size is compiled in"):
        tj.export(lambda x: tj.concat([x, x * 2], axis=0), tj.spec(("n", 6), tj.float64), targets=("cpu",))


def test_an_embedding_lookup_keeps_its_index_check(rng, tmp_path):
    table = rng.standard_normal((10, 4)).astype(np.float32)
    emb = tj.asarray(table)
    tj.export(lambda idx: emb[idx] * 2, tj.spec(("n",), tj.int64), targets=("cpu",)).save(tmp_path / "e.tjx")
    f = tj.load(tmp_path / "e.tjx")
    for n in (1, 50):
        idx = rng.integers(0, 10, n)
        np.testing.assert_array_equal(f(idx).numpy(), table[idx] * 2)
    with pytest.raises(IndexError, match="out of range"):
        f(np.array([3, 10]))
