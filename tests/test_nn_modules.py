"""nn modules: registration, traversal, modes, state_dict, layers against PyTorch."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj

nn, F = tj.nn, tj.nn.functional


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(8, 2, bias=False))
        self.register_buffer("steps", tj.zeros(()))
        self.register_buffer("scratch", tj.zeros(3), persistent=False)
        self.scale = 2.0

    def forward(self, x):
        return self.head(self.norm(self.fc1(x))) * self.scale


def test_registration_and_traversal() -> None:
    m = MLP()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "norm.weight", "norm.bias", "head.1.weight"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    assert [n for n, _ in m.named_buffers()] == ["steps", "scratch"]
    assert list(m.state_dict()) == ["steps"] + names     # own tensors first, then children (as PyTorch)
    assert [n for n, _ in m.named_modules()] == ["", "fc1", "norm", "head", "head.0", "head.1"]
    assert len(list(m.children())) == 3
    assert m.head[1].bias is None
    m.eval()
    assert not any(x.training for x in m.modules())
    m.train()
    assert m.head[0].training
    assert "Linear(in_features=4, out_features=8, bias=True)" in repr(m)


def test_forward_backward_zero_grad() -> None:
    m = MLP()
    m(tj.ones((3, 4))).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_load_state_dict_strict_errors_and_in_place_copy() -> None:
    a, b = MLP(), MLP()
    w = b.fc1.weight
    b.load_state_dict(a.state_dict())
    assert b.fc1.weight is w                      # copied in place: jitted code stays valid
    np.testing.assert_array_equal(w.numpy(), a.fc1.weight.numpy())
    sd = dict(a.state_dict())
    sd.pop("fc1.bias")
    sd["extra"] = tj.zeros(1)
    with pytest.raises(RuntimeError, match=r"missing key\(s\).*'fc1.bias'"):
        b.load_state_dict(sd)
    with pytest.raises(RuntimeError, match=r"unexpected key\(s\).*'extra'"):
        b.load_state_dict(sd)
    assert b.load_state_dict(sd, strict=False).missing_keys == ["fc1.bias"]
    bad = dict(a.state_dict())
    bad["fc1.weight"] = tj.zeros((2, 2))
    with pytest.raises(RuntimeError, match=r"size mismatch for fc1.weight.*\(2, 2\).*\(8, 4\)"):
        b.load_state_dict(bad, strict=False)


def test_linear_default_init_bounds() -> None:
    tj.manual_seed(0)
    lin = nn.Linear(100, 300)
    bound = 1 / math.sqrt(100)
    w = lin.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01
    assert np.abs(lin.bias.numpy()).max() <= bound
    tj.manual_seed(0)
    np.testing.assert_array_equal(nn.Linear(100, 300).weight.numpy(), w)   # reproducible


def test_layers_match_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    lin, ln = nn.Linear(6, 4), nn.LayerNorm(4)
    tlin, tln = torch.nn.Linear(6, 4), torch.nn.LayerNorm(4)
    with torch.no_grad():
        tlin.weight.copy_(torch.tensor(lin.weight.numpy()))
        tlin.bias.copy_(torch.tensor(lin.bias.numpy()))
    out = nn.GELU()(ln(lin(tj.asarray(x))))
    tout = torch.nn.GELU()(tln(tlin(torch.tensor(x))))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), tlin.weight.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ln.weight.grad.numpy(), tln.weight.grad.numpy(), rtol=1e-3, atol=1e-4)


def test_embedding_eager_and_jit_agree(jit_backend: str) -> None:
    emb = nn.Embedding(10, 3, padding_idx=0)
    assert np.all(emb.weight.numpy()[0] == 0)
    idx = tj.asarray(np.array([[1, 2, 0], [9, 9, 4]]))
    eager = emb(idx)
    assert eager.shape == (2, 3, 3)
    jitted = tj.jit(lambda i: emb(i), backend=jit_backend)(idx)
    np.testing.assert_allclose(jitted.numpy(), eager.numpy(), rtol=1e-6)
    eager.sum().backward()
    g = emb.weight.grad.numpy()
    assert g[9].tolist() == [2.0] * 3 and g[3].tolist() == [0.0] * 3


def test_dropout_train_eval_and_rate() -> None:
    d = nn.Dropout(0.25)
    x = tj.ones((200, 100))
    y = d(x).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    assert not np.array_equal(d(x).numpy(), y)            # a fresh mask per call
    d.eval()
    assert d(x) is x


def test_dropout_draws_fresh_masks_under_jit(jit_backend: str) -> None:
    d = nn.Dropout(0.5)
    f = tj.jit(lambda x: d(x), backend=jit_backend)
    x = tj.ones((64,))
    tj.manual_seed(5)
    a, b = f(x).numpy(), f(x).numpy()
    assert not np.array_equal(a, b)
    tj.manual_seed(5)
    np.testing.assert_array_equal(d(x).numpy(), a)       # same stream as eager


def test_module_to_double_and_setattr_rules() -> None:
    m = nn.Linear(2, 2).double()
    assert m.weight.dtype == tj.float64 and m(tj.ones((1, 2), dtype=tj.float64)).dtype == tj.float64
    m.weight = nn.Parameter(tj.zeros((2, 2)))
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    m.tag = "x"
    assert "tag" not in dict(m.named_parameters())
    with pytest.raises(AttributeError, match="super"):
        class Bad(nn.Module):
            def __init__(self):
                self.x = 1
        Bad()


def test_embedding_under_jit_is_a_gather_with_eagers_values_and_gradients():
    # a take and, for the gradient, a scatter_add: never a tokens x vocabulary one-hot matmul
    tj.manual_seed(0)
    emb = nn.Embedding(1000, 8)
    ids = tj.asarray(np.array([[3, 999, 3], [0, 7, 3]]))

    def loss(i):
        return (emb(i) ** 2).sum()

    np.testing.assert_array_equal(tj.jit(emb)(ids).numpy(), emb(ids).numpy())
    loss(ids).backward()
    eager_grad = emb.weight.grad.numpy().copy()
    emb.weight.grad = None
    tj.jit(lambda i: loss(i).backward())(ids)
    np.testing.assert_allclose(emb.weight.grad.numpy(), eager_grad, rtol=1e-6)
    assert np.count_nonzero(eager_grad.any(axis=1)) == 4      # rows 0, 3, 7, 999 (3 three times)
    graph = str(tj.explain(loss, ids).graph)
    assert "take" in graph and "matmul" not in graph and "[6,1000]" not in graph.replace(" ", "")
