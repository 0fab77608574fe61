"""Checkpoints are untrusted input: crafted files fail cleanly and saving never writes elsewhere.

Every crafted file below carries a *valid* SHA-256 trailer (recomputed after crafting), so it
gets past the integrity check and exercises the field validation behind it.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tracejit as tj
from tracejit.serialization import CheckpointError

_PREFIX = struct.Struct("<8sIQ")


def _write_valid(path) -> None:
    tj.save({"w": tj.asarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
             "b": tj.asarray(np.array([1, 2], dtype=np.int64)), "step": 3}, path)


def _split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """magic+version, header text, data of a valid checkpoint."""
    magic, version, hlen = _PREFIX.unpack_from(raw)
    header = raw[_PREFIX.size:_PREFIX.size + hlen]
    data = raw[_PREFIX.size + hlen:-32]
    return _PREFIX.pack(magic, version, 0)[:12], header, data


def _assemble(head12: bytes, header: bytes, data: bytes) -> bytes:
    body = head12 + struct.pack("<Q", len(header)) + header + data
    return body + hashlib.sha256(body).digest()


def craft(tmp_path, edit: Callable[[dict], Any] | None = None, *, header_text: bytes | None = None,
          data: bytes | None = None) -> str:
    """A checkpoint whose header was edited by ``edit`` (or replaced), with a correct digest."""
    good = tmp_path / "good.tjs"
    _write_valid(good)
    head12, header, old_data = _split(good.read_bytes())
    if header_text is None:
        h = json.loads(header)
        if edit is not None:
            h = edit(h) or h
        header_text = json.dumps(h).encode()
    out = tmp_path / "crafted.tjs"
    out.write_bytes(_assemble(head12, header_text, old_data if data is None else data))
    return str(out)


def _set(path: tuple, value: Any) -> Callable[[dict], None]:
    def edit(h: dict) -> None:
        node = h
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return edit


def _drop(path: tuple, key: str) -> Callable[[dict], None]:
    def edit(h: dict) -> None:
        node = h
        for p in path:
            node = node[p]
        del node[key]
    return edit


def _deep_tree(depth: int) -> Callable[[dict], None]:
    def edit(h: dict) -> None:
        node: Any = {"__dict__": [["x", {"__tensor__": 0}], ["y", {"__tensor__": 1}]]}
        for _ in range(depth):
            node = [node]
        h["tree"] = node
    return edit


def _tree(tree: Any) -> Callable[[dict], None]:
    return _set(("tree",), tree)


_BOTH = [["w", {"__tensor__": 0}], ["b", {"__tensor__": 1}]]

# (name, edit of the parsed header, a regex the error message must match: the field it names)
CRAFTED: list[tuple[str, Callable[[dict], Any], str]] = [
    ("dtype str", _set(("tensors", 0, "dtype"), "str"), r"tensors\[0\]\.dtype"),
    ("dtype float128", _set(("tensors", 0, "dtype"), "float128"), r"tensors\[0\]\.dtype"),
    ("dtype object", _set(("tensors", 0, "dtype"), "object"), r"tensors\[0\]\.dtype"),
    ("dtype O", _set(("tensors", 1, "dtype"), "O"), r"tensors\[1\]\.dtype"),
    ("dtype big-endian", _set(("tensors", 0, "dtype"), ">f4"), r"tensors\[0\]\.dtype"),
    ("dtype structured", _set(("tensors", 0, "dtype"), {"names": ["a"], "formats": ["O"]}),
     r"tensors\[0\]\.dtype"),
    ("dtype number", _set(("tensors", 0, "dtype"), 7), r"tensors\[0\]\.dtype"),
    ("shape negative", _set(("tensors", 0, "shape"), [-3, -4]), r"tensors\[0\]\.shape\[0\]"),
    ("shape float", _set(("tensors", 0, "shape"), [3.0, 4]), r"tensors\[0\]\.shape\[0\]"),
    ("shape bool", _set(("tensors", 1, "shape"), [True, 2]), r"tensors\[1\]\.shape\[0\]"),
    ("shape not a list", _set(("tensors", 0, "shape"), "3,4"), r"tensors\[0\]\.shape"),
    ("shape too many dims", _set(("tensors", 0, "shape"), [1] * 65), r"tensors\[0\]\.shape"),
    ("shape huge", _set(("tensors", 0, "shape"), [2**40, 2**40, 0]), r"tensors\[0\]\.shape"),
    ("shape huge dim", _set(("tensors", 0, "shape"), [0, 10**30]), r"tensors\[0\]\.shape\[1\]"),
    ("shape vs nbytes", _set(("tensors", 0, "shape"), [4, 4]), r"tensors\[0\]\.nbytes"),
    ("nbytes negative", _set(("tensors", 0, "nbytes"), -48), r"tensors\[0\]\.nbytes"),
    ("nbytes string", _set(("tensors", 0, "nbytes"), "48"), r"tensors\[0\]\.nbytes"),
    ("offset negative", _set(("tensors", 1, "offset"), -64), r"tensors\[1\]\.offset"),
    ("offset past data", _set(("tensors", 1, "offset"), 10**6), r"tensors\[1\]\.offset"),
    ("offset float", _set(("tensors", 1, "offset"), 64.0), r"tensors\[1\]\.offset"),
    ("offset null", _set(("tensors", 0, "offset"), None), r"tensors\[0\]\.offset"),
    ("entry missing key", _drop(("tensors", 0), "nbytes"), r"tensors\[0\]"),
    ("entry not an object", _set(("tensors", 0), [0, 1]), r"tensors\[0\]"),
    ("tensors not a list", _set(("tensors",), {"0": 1}), r"tensors must be a list"),
    ("data_size wrong", _set(("data_size",), 1), r"data_size"),
    ("data_size string", _set(("data_size",), "80"), r"data_size"),
    ("data_size negative", _set(("data_size",), -1), r"data_size"),
    ("header missing tensors", _drop((), "tensors"), r"header"),
    ("header extra key", _set(("__reduce__",), "os.system"), r"header"),
    ("header a list", lambda h: [h], r"header"),
    ("tensor index out of range", _tree({"__dict__": [["w", {"__tensor__": 0}], ["b", {"__tensor__": 5}]]}),
     r"__tensor__"),
    ("tensor index negative", _tree({"__dict__": [["w", {"__tensor__": 0}], ["b", {"__tensor__": -1}]]}),
     r"__tensor__"),
    ("tensor index string", _tree({"__dict__": [["w", {"__tensor__": "0"}], ["b", {"__tensor__": 1}]]}),
     r"__tensor__"),
    ("tensor index bool", _tree({"__dict__": [["w", {"__tensor__": 0}], ["b", {"__tensor__": True}]]}),
     r"__tensor__"),
    ("tensor used twice", _tree({"__dict__": [["w", {"__tensor__": 0}], ["b", {"__tensor__": 0}]]}),
     r"__tensor__ = 0 is referenced twice"),
    ("tensor unreferenced", _tree({"__dict__": [["w", {"__tensor__": 0}]]}), r"tensors\[1\]"),
    ("tree nested deeply", _deep_tree(200), r"tree.*nested deeper than 64"),
    ("unknown node", _tree({"__class__": "os.system", "args": ["true"]}), r"tree: a node must be"),
    ("marker with extra key", _tree({"__tensor__": 0, "__dict__": _BOTH}), r"tree: a node must be"),
    ("__dict__ not a list", _tree({"__dict__": {"w": 0}}), r"tree\.__dict__ must be a list"),
    ("__dict__ item not a pair", _tree({"__dict__": [["w", {"__tensor__": 0}, 1], ["b", {"__tensor__": 1}]]}),
     r"tree\.__dict__\[0\]"),
    ("__dict__ key a list", _tree({"__dict__": [[["w"], {"__tensor__": 0}], ["b", {"__tensor__": 1}]]}),
     r"tree\.__dict__\[0\] key"),
    ("__dict__ key an object", _tree({"__dict__": [[{"a": 1}, {"__tensor__": 0}], ["b", {"__tensor__": 1}]]}),
     r"tree\.__dict__\[0\] key"),
    ("__dict__ key repeated", _tree({"__dict__": [["w", {"__tensor__": 0}], ["w", {"__tensor__": 1}]]}),
     r"tree\.__dict__\[1\] key 'w' is repeated"),
    ("__tuple__ not a list", _tree({"__tuple__": "ab"}), r"tree\.__tuple__ must be a list"),
]

# Header texts that are not a JSON object at all.
CRAFTED_TEXT: list[tuple[str, bytes, str]] = [
    ("header not JSON", b"{'tree': 1}", r"header: unreadable JSON"),
    ("header not UTF-8", b'{"tree": "\xff\xfe"}', r"header: unreadable JSON"),
    ("header duplicate key", b'{"tree": 1, "tree": 2, "tensors": [], "data_size": 0}', r"duplicate key"),
    ("header integer too long", b'{"tree": 1, "tensors": [], "data_size": ' + b"9" * 5000 + b"}", r"header"),
    ("header empty", b"", r"header: unreadable JSON"),
    ("tree nested past the JSON parser",
     b'{"tensors": [], "data_size": 0, "tree": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     r"header: nested too deeply"),
]


def test_enough_crafted_trials() -> None:
    assert len(CRAFTED) + len(CRAFTED_TEXT) >= 22


@pytest.mark.parametrize("edit,field", [c[1:] for c in CRAFTED], ids=[c[0] for c in CRAFTED])
def test_crafted_header_raises_checkpoint_error(tmp_path, edit, field) -> None:
    path = craft(tmp_path, edit)
    with pytest.raises(CheckpointError, match=field):
        tj.load_state(path)


@pytest.mark.parametrize("text,field", [c[1:] for c in CRAFTED_TEXT], ids=[c[0] for c in CRAFTED_TEXT])
def test_crafted_header_text_raises_checkpoint_error(tmp_path, text, field) -> None:
    path = craft(tmp_path, header_text=text, data=b"")
    with pytest.raises(CheckpointError, match=field):
        tj.load_state(path)


def test_object_dtype_over_pickle_bytes_never_unpickles(tmp_path, monkeypatch) -> None:
    """An object dtype over a pickle payload is refused before any unpickling could happen."""
    payload = pickle.dumps(("boom",))

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("load must never unpickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)

    def edit(h: dict) -> dict:
        return {"tree": {"__tensor__": 0}, "data_size": len(payload),
                "tensors": [{"dtype": "object", "shape": [1], "offset": 0, "nbytes": len(payload)}]}

    with pytest.raises(CheckpointError, match=r"tensors\[0\]\.dtype"):
        tj.load_state(craft(tmp_path, edit, data=payload))


def test_every_truncation_raises(tmp_path) -> None:
    path = tmp_path / "s.tjs"
    _write_valid(path)
    raw = path.read_bytes()
    for n in range(len(raw)):
        (tmp_path / "cut").write_bytes(raw[:n])
        with pytest.raises(CheckpointError):
            tj.load_state(tmp_path / "cut")


def test_every_byte_flip_raises(tmp_path) -> None:
    path = tmp_path / "s.tjs"
    _write_valid(path)
    raw = path.read_bytes()
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            flipped = bytearray(raw)
            flipped[i] ^= bit
            (tmp_path / "flip").write_bytes(bytes(flipped))
            with pytest.raises(CheckpointError):
                tj.load_state(tmp_path / "flip")


def test_appended_bytes_raise(tmp_path) -> None:
    path = tmp_path / "s.tjs"
    _write_valid(path)
    (tmp_path / "pad").write_bytes(path.read_bytes() + b"\0" * 64)
    with pytest.raises(CheckpointError):
        tj.load_state(tmp_path / "pad")


# ---- round trip of real state dicts -------------------------------------------------------------

def _every_dtype() -> dict[str, tj.Tensor]:
    rng = np.random.default_rng(0)
    out = {}
    for d in tj.dtypes.ALL_DTYPES:
        a = (rng.standard_normal((3, 5)) * 50).astype(d)
        out[d.name] = tj.asarray(a)
        out[d.name + "_0d"] = tj.asarray(a[1, 2])
        out[d.name + "_empty"] = tj.asarray(a[:0])
        out[d.name + "_strided"] = tj.asarray(a)[::2, ::-2]
        out[d.name + "_T"] = tj.asarray(a).T
    return out


def test_round_trip_nested_state(tmp_path) -> None:
    model = tj.nn.Sequential(tj.nn.Linear(3, 4), tj.nn.LayerNorm(4))
    opt = tj.optim.AdamW(model.parameters())
    model(tj.ones((2, 3))).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "dtypes": _every_dtype(),
             "meta": {"epoch": 7, "lr": 1e-3, "nan": float("nan"), "name": "run", "none": None,
                      "flags": [True, False], "pair": (1, (2.5, "x")), 3: {"deep": [[{"k": tj.zeros(())}]]},
                      "empty": {}, "empty_list": [], "shape0": tj.zeros((0, 0, 2), dtype=tj.int8)}}
    path = tmp_path / "state.tjs"
    tj.save(state, path)
    _assert_same(tj.load_state(path), state)


def _assert_same(a: Any, b: Any, where: str = "state") -> None:
    if isinstance(b, tj.Tensor):
        assert isinstance(a, tj.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=where)
    elif isinstance(b, dict):
        assert isinstance(a, dict) and list(a) == list(b), where
        for k in b:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(b, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(b, float) and b != b:
        assert a != a, where
    else:
        assert a == b and type(a) is type(b), where


def test_loaded_tensors_are_independent_copies(tmp_path) -> None:
    path = tmp_path / "s.tjs"
    _write_valid(path)
    s = tj.load_state(path)
    s["w"][0, 0] = 99.0                       # writable, and not a view of the file's bytes
    assert tj.load_state(path)["w"][0, 0].item() == 0.0


# ---- saving ----------------------------------------------------------------------------------------

def test_planted_symlink_at_old_temp_name_is_not_written_through(tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "ck.tjs"
    os.symlink(victim, f"{path}.tmp{os.getpid()}")
    _write_valid(path)
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and tj.load_state(path)["step"] == 3


def test_save_replaces_a_symlink_at_path_rather_than_writing_through_it(tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "ck.tjs"
    os.symlink(victim, path)
    _write_valid(path)
    assert victim.read_text() == "precious"
    assert not path.is_symlink()


def test_save_leaves_no_temporary_and_uses_the_umask(tmp_path) -> None:
    path = tmp_path / "ck.tjs"
    old = os.umask(0o027)
    try:
        _write_valid(path)
    finally:
        os.umask(old)
    assert os.listdir(tmp_path) == ["ck.tjs"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_removes_its_temporary_on_failure(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ck.tjs"
    path.write_bytes(b"old")

    def fail(*a: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _write_valid(path)
    assert os.listdir(tmp_path) == ["ck.tjs"] and path.read_bytes() == b"old"


def test_save_flushes_file_and_directory(tmp_path, monkeypatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    _write_valid(tmp_path / "ck.tjs")
    assert len(synced) >= 2      # the data, then the directory entry of the rename


def test_save_refuses_what_load_would_refuse(tmp_path) -> None:
    deep: list = []
    node = deep
    for _ in range(100):
        node.append([])
        node = node[0]
    with pytest.raises(ValueError, match="nested deeper"):
        tj.save({"deep": deep}, tmp_path / "d")
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        tj.save(loop, tmp_path / "l")
    assert os.listdir(tmp_path) == []
