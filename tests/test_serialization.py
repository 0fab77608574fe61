"""tj.save / tj.load_state: exact round trips and clear errors on damaged files."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.errors import CacheCorruptionError
from tracejit.serialization import CheckpointError


@pytest.fixture
def state():
    return {
        "f32": tj.asarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        "f64": tj.asarray(np.array(3.5)),
        "f16": tj.asarray(np.array([1.5, -2.0], dtype=np.float16)),
        "i8": tj.asarray(np.array([-128, 127], dtype=np.int8)),
        "i64": tj.asarray(np.array([2**62, -1], dtype=np.int64)),
        "u8": tj.asarray(np.array([0, 255], dtype=np.uint8)),
        "b": tj.asarray(np.array([[True], [False]])),
        "empty": tj.zeros((0, 5)),
        "noncontig": tj.asarray(np.arange(20.0).reshape(4, 5).T),
    }


def test_round_trip_exact(tmp_path, state) -> None:
    path = tmp_path / "s.tjs"
    tj.save(state, path)
    back = tj.load_state(path)
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k].numpy(), v.numpy())


def test_module_and_optimizer_round_trip(tmp_path) -> None:
    model = tj.nn.Sequential(tj.nn.Linear(3, 4), tj.nn.LayerNorm(4))
    opt = tj.optim.AdamW(model.parameters())
    model(tj.ones((2, 3))).sum().backward()
    opt.step()
    tj.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": 3}, tmp_path / "ck")
    ck = tj.load_state(tmp_path / "ck")
    other = tj.nn.Sequential(tj.nn.Linear(3, 4), tj.nn.LayerNorm(4))
    other.load_state_dict(ck["model"])
    for a, b in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert ck["epoch"] == 3 and 0 in ck["opt"]["state"]          # integer keys survive
    assert ck["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples too
    opt2 = tj.optim.AdamW(other.parameters())
    opt2.load_state_dict(ck["opt"])


def test_truncated_corrupted_and_foreign_files(tmp_path, state) -> None:
    path = tmp_path / "s.tjs"
    tj.save(state, path)
    raw = path.read_bytes()
    for n in (5, 40, len(raw) // 2, len(raw) - 1):
        (tmp_path / "cut").write_bytes(raw[:n])
        with pytest.raises(CheckpointError):
            tj.load_state(tmp_path / "cut")
    flipped = bytearray(raw)
    flipped[-100] ^= 1
    (tmp_path / "flip").write_bytes(bytes(flipped))
    with pytest.raises(CacheCorruptionError, match="checksum"):
        tj.load_state(tmp_path / "flip")
    (tmp_path / "npy").write_bytes(b"\x93NUMPY" + b"\0" * 100)
    with pytest.raises(CheckpointError, match="not a tracejit checkpoint"):
        tj.load_state(tmp_path / "npy")
    v2 = bytearray(raw)
    v2[8] = 9
    (tmp_path / "v").write_bytes(bytes(v2))
    with pytest.raises(CheckpointError, match="version 9"):
        tj.load_state(tmp_path / "v")


def test_save_rejects_unsupported_objects(tmp_path) -> None:
    with pytest.raises(TypeError, match="state_dict"):
        tj.save(tj.nn.Linear(2, 2), tmp_path / "m")
    with pytest.raises(TypeError, match="cannot store"):
        tj.save({"f": object()}, tmp_path / "m")


def test_load_reads_what_save_wrote(tmp_path, state) -> None:
    """``tj.load`` of a checkpoint is ``tj.load_state`` (as ``torch.load`` reads ``torch.save``'s)."""
    path = tmp_path / "c.tj"
    tj.save(state, path)
    back = tj.load(path)
    assert list(back) == list(state)
    for k, v in state.items():
        np.testing.assert_array_equal(back[k].numpy(), v.numpy())
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(tj.TracejitError, match="not a tracejit export file"):
        tj.load(tmp_path / "junk")
