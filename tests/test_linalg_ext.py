"""``tj.linalg`` (the Array API linalg extension) vs NumPy, PyTorch autograd and finite differences,
eagerly and under jit."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

torch = pytest.importorskip("torch")

STANDARD_FUNCTIONS = ["cholesky", "cross", "det", "diagonal", "eigh", "eigvalsh", "inv", "matmul",
                      "matrix_norm", "matrix_power", "matrix_rank", "matrix_transpose", "outer", "pinv",
                      "qr", "slogdet", "solve", "svd", "svdvals", "tensordot", "trace", "vecdot",
                      "vector_norm"]


def _spd(rng, shape):
    a = rng.standard_normal(shape)
    return a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])


def _sym(rng, shape):
    a = rng.standard_normal(shape)
    return (a + np.swapaxes(a, -1, -2)) / 2


def test_namespace_has_every_function_of_the_extension():
    missing = [f for f in STANDARD_FUNCTIONS if not callable(getattr(tj.linalg, f, None))]
    assert not missing
    assert set(STANDARD_FUNCTIONS) <= set(tj.linalg.__all__)


def test_eager_matches_numpy(rng):
    a = rng.standard_normal((2, 4, 4))
    b = rng.standard_normal((3, 5, 3))
    spd, sym = _spd(rng, (2, 4, 4)), _sym(rng, (2, 4, 4))
    A, B = tj.asarray(a), tj.asarray(b)
    assert_close(tj.linalg.inv(A), np.linalg.inv(a), rtol=1e-10)
    assert_close(tj.linalg.det(A), np.linalg.det(a), rtol=1e-10)
    sign, logabs = tj.linalg.slogdet(A)
    assert_close(sign, np.linalg.slogdet(a)[0])
    assert_close(logabs, np.linalg.slogdet(a)[1], rtol=1e-10)
    assert_close(tj.linalg.cholesky(tj.asarray(spd)), np.linalg.cholesky(spd), rtol=1e-10)
    assert_close(tj.linalg.cholesky(tj.asarray(spd), upper=True),
                 np.swapaxes(np.linalg.cholesky(spd), -1, -2), rtol=1e-10)
    w, v = tj.linalg.eigh(tj.asarray(sym))
    assert_close(w, np.linalg.eigh(sym)[0], rtol=1e-10)
    assert_close(np.asarray(v) @ (np.asarray(w)[..., None] * np.swapaxes(np.asarray(v), -1, -2)), sym,
                 rtol=1e-10, atol=1e-12)
    assert_close(tj.linalg.eigvalsh(tj.asarray(sym)), np.linalg.eigvalsh(sym), rtol=1e-10)
    for full in (True, False):
        u, s, vh = tj.linalg.svd(B, full_matrices=full)
        ru, rs, rvh = np.linalg.svd(b, full_matrices=full)
        assert (u.shape, s.shape, vh.shape) == (ru.shape, rs.shape, rvh.shape)
        assert_close(s, rs, rtol=1e-10)
        k = rs.shape[-1]
        recon = (np.asarray(u)[..., :k] * np.asarray(s)[..., None, :]) @ np.asarray(vh)[..., :k, :]
        assert_close(recon, b, rtol=1e-10, atol=1e-12)
    assert_close(tj.linalg.svdvals(B), np.linalg.svd(b, compute_uv=False), rtol=1e-10)
    for mode in ("reduced", "complete"):
        q, r = tj.linalg.qr(B, mode=mode)
        rq, rr = np.linalg.qr(b, mode=mode)
        assert_close(q, rq, rtol=1e-10, atol=1e-12)
        assert_close(r, rr, rtol=1e-10, atol=1e-12)
    rhs = rng.standard_normal((4, 2))
    assert_close(tj.linalg.solve(A, tj.asarray(rhs)), np.linalg.solve(a, rhs), rtol=1e-10)
    vec = rng.standard_normal(4)
    assert_close(tj.linalg.solve(A, tj.asarray(vec)), np.linalg.solve(a, vec[:, None])[..., 0], rtol=1e-10)
    assert_close(tj.linalg.pinv(B), np.linalg.pinv(b), rtol=1e-10, atol=1e-12)
    low_rank = b[..., :2] @ rng.standard_normal((2, 3))
    assert_close(tj.linalg.matrix_rank(tj.asarray(low_rank)), np.linalg.matrix_rank(low_rank))
    for n in (-3, 0, 1, 5):
        assert_close(tj.linalg.matrix_power(A, n), np.linalg.matrix_power(a, n), rtol=1e-9)
    for order in ("fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf):
        assert_close(tj.linalg.matrix_norm(B, ord=order), np.linalg.matrix_norm(b, ord=order), rtol=1e-10)
    assert tj.linalg.matrix_norm(B, keepdims=True).shape == (3, 1, 1)
    for order in (2, 1, math.inf, -math.inf, 0, 3, -0.5):
        assert_close(tj.linalg.vector_norm(B, ord=order, axis=(0, 2)),
                     np.linalg.vector_norm(b, ord=order, axis=(0, 2)), rtol=1e-10)
    assert_close(tj.linalg.vector_norm(B), np.linalg.vector_norm(b), rtol=1e-10)
    for k in (-2, 0, 1, 7):
        assert_close(tj.linalg.diagonal(B, offset=k), np.linalg.diagonal(b, offset=k))
        assert_close(tj.linalg.trace(B, offset=k), np.linalg.trace(b, offset=k))
    c1, c2 = rng.standard_normal((5, 3)), rng.standard_normal((3,))
    assert_close(tj.linalg.cross(tj.asarray(c1), tj.asarray(c2)), np.cross(c1, c2), rtol=1e-12)
    ci = np.arange(6).reshape(3, 2)
    assert_close(tj.linalg.cross(tj.asarray(ci), tj.asarray(ci[::-1].copy()), axis=-2),
                 np.cross(ci, ci[::-1], axis=0))


def test_float32_matches_float64_reference(rng):
    a = _spd(rng, (3, 3)).astype(np.float32)
    for name in ("inv", "det", "cholesky"):
        out = getattr(tj.linalg, name)(tj.asarray(a))
        assert out.dtype == tj.float32
        assert_close(out, getattr(np.linalg, name)(a.astype(np.float64)), rtol=1e-4, atol=1e-5)


def test_bad_input_names_what_is_wrong():
    with pytest.raises(TypeError, match="floating-point"):
        tj.linalg.inv(tj.asarray([[1, 2], [3, 4]]))
    with pytest.raises(ValueError, match="square"):
        tj.linalg.det(tj.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 2-D"):
        tj.linalg.cholesky(tj.zeros((3,)))
    with pytest.raises(ValueError, match="mode"):
        tj.linalg.qr(tj.zeros((3, 3)), mode="r")
    with pytest.raises(ValueError, match="ord"):
        tj.linalg.matrix_norm(tj.zeros((3, 3)), ord=3)
    with pytest.raises(ValueError, match="size 3"):
        tj.linalg.cross(tj.zeros((4,)), tj.zeros((4,)))
    with pytest.raises(np.linalg.LinAlgError):
        tj.linalg.cholesky(tj.asarray(-np.eye(2)))


def _all_decompositions(a, spd, sym, rhs, b):
    """Every host step once, so one compiled program covers them all."""
    w, v = tj.linalg.eigh(sym)
    u, s, vh = tj.linalg.svd(b, full_matrices=False)
    q, r = tj.linalg.qr(b)
    sign, logabs = tj.linalg.slogdet(a)
    return (tj.linalg.inv(a) * 2.0, tj.linalg.det(a), sign, logabs, tj.linalg.cholesky(spd),
            w + 1.0, tj.abs(v), s, tj.abs(u), tj.abs(vh), tj.abs(q), tj.abs(r),
            tj.linalg.solve(a, rhs), tj.linalg.pinv(b), tj.linalg.matrix_norm(b, ord="nuc"),
            tj.linalg.vector_norm(b, axis=-1, ord=3), tj.linalg.matrix_power(a, 3), tj.linalg.trace(a))


def test_jit_equals_eager(rng, jit_backend):
    args = [tj.asarray(x) for x in (rng.standard_normal((2, 3, 3)), _spd(rng, (2, 3, 3)),
                                    _sym(rng, (2, 3, 3)), rng.standard_normal((2, 3, 2)),
                                    rng.standard_normal((2, 4, 3)))]
    eager = _all_decompositions(*args)
    compiled = jitted(_all_decompositions, jit_backend)(*args)
    for e, c in zip(eager, compiled):
        assert_close(c, np.asarray(e), rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- gradients

def _loss_pairs():
    """(name, tracejit loss, torch loss, input maker): each loss reads every output part."""
    def weights(shape, seed):
        return np.random.default_rng(seed).standard_normal(shape)

    def tj_w(x, shape, seed):
        return tj.asarray(weights(shape, seed))

    def t_w(shape, seed):
        return torch.tensor(weights(shape, seed))

    return [
        ("inv", lambda x: tj.sum(tj.linalg.inv(x) * tj_w(x, (3, 3), 1)),
         lambda x: (torch.linalg.inv(x) * t_w((3, 3), 1)).sum(),
         lambda r: r.standard_normal((3, 3)) + 3 * np.eye(3)),
        ("solve", lambda x: tj.sum(tj.linalg.solve(x, tj_w(x, (3, 2), 2)) * tj_w(x, (3, 2), 3)),
         lambda x: (torch.linalg.solve(x, t_w((3, 2), 2)) * t_w((3, 2), 3)).sum(),
         lambda r: r.standard_normal((3, 3)) + 3 * np.eye(3)),
        ("det", lambda x: tj.sum(tj.linalg.det(x)), lambda x: torch.linalg.det(x).sum(),
         lambda r: r.standard_normal((2, 3, 3))),
        ("slogdet", lambda x: tj.sum(tj.linalg.slogdet(x).logabsdet),
         lambda x: torch.linalg.slogdet(x)[1].sum(),
         lambda r: r.standard_normal((2, 3, 3))),
        ("cholesky", lambda x: tj.sum(tj.linalg.cholesky(x) * tj_w(x, (3, 3), 4)),
         lambda x: (torch.linalg.cholesky(x) * t_w((3, 3), 4)).sum(), lambda r: _spd(r, (3, 3))),
        ("eigh", lambda x: tj.sum(tj.linalg.eigh(x)[0] * tj_w(x, (3,), 5))
         + tj.sum(tj.linalg.eigh(x)[1] ** 2 * tj_w(x, (3, 3), 6)),
         lambda x: (torch.linalg.eigh(x)[0] * t_w((3,), 5)).sum()
         + (torch.linalg.eigh(x)[1] ** 2 * t_w((3, 3), 6)).sum(),
         lambda r: _sym(r, (3, 3))),
        ("svd", lambda x: _svd_loss_tj(x, tj_w), lambda x: _svd_loss_torch(x, t_w),
         lambda r: r.standard_normal((4, 3))),
        ("svd_wide", lambda x: _svd_loss_tj(tj.matrix_transpose(x), tj_w),
         lambda x: _svd_loss_torch(x.mT, t_w), lambda r: r.standard_normal((4, 3))),
        ("svdvals", lambda x: tj.sum(tj.linalg.svdvals(x) * tj_w(x, (3,), 7)),
         lambda x: (torch.linalg.svdvals(x) * t_w((3,), 7)).sum(), lambda r: r.standard_normal((3, 3))),
        ("qr", lambda x: tj.sum(tj.linalg.qr(x)[0] * tj_w(x, (4, 3), 8))
         + tj.sum(tj.linalg.qr(x)[1] * tj_w(x, (3, 3), 9)),
         lambda x: (torch.linalg.qr(x)[0] * t_w((4, 3), 8)).sum()
         + (torch.linalg.qr(x)[1] * t_w((3, 3), 9)).sum(),
         lambda r: r.standard_normal((4, 3))),
        ("vector_norm", lambda x: tj.sum(tj.linalg.vector_norm(x, axis=-1)) + tj.linalg.vector_norm(x, ord=3),
         lambda x: torch.linalg.vector_norm(x, dim=-1).sum() + torch.linalg.vector_norm(x, ord=3),
         lambda r: r.standard_normal((3, 4))),
        ("matrix_norm", lambda x: tj.linalg.matrix_norm(x) + tj.linalg.matrix_norm(x, ord="nuc")
         + tj.linalg.matrix_norm(x, ord=2),
         lambda x: torch.linalg.matrix_norm(x) + torch.linalg.matrix_norm(x, ord="nuc")
         + torch.linalg.matrix_norm(x, ord=2), lambda r: r.standard_normal((3, 4))),
    ]


def _svd_loss_tj(x, w):
    u, s, vh = tj.linalg.svd(x, full_matrices=False)
    # |U| and |Vh| entries squared: invariant to the sign of each singular pair
    return (tj.sum(u ** 2 * w(x, u.shape, 10)) + tj.sum(s * w(x, s.shape, 11))
            + tj.sum(vh ** 2 * w(x, vh.shape, 12)))


def _svd_loss_torch(x, w):
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (u ** 2 * w(tuple(u.shape), 10)).sum() + (s * w(tuple(s.shape), 11)).sum() \
        + (vh ** 2 * w(tuple(vh.shape), 12)).sum()


PAIRS = _loss_pairs()


@pytest.mark.parametrize("name,tj_loss,torch_loss,make", PAIRS, ids=[p[0] for p in PAIRS])
def test_gradient_matches_torch_autograd(name, tj_loss, torch_loss, make, rng):
    x = make(rng)
    ours = tj.grad(tj_loss)(tj.asarray(x)).numpy()
    xt = torch.tensor(x, requires_grad=True)
    torch_loss(xt).backward()
    assert_close(ours, xt.grad.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["inv", "det", "cholesky", "svd", "qr", "vector_norm"])
def test_gradient_matches_finite_differences(name, rng):
    _, tj_loss, _, make = next(p for p in PAIRS if p[0] == name)
    x = make(rng)
    g = tj.grad(tj_loss)(tj.asarray(x)).numpy()
    # a random direction; for cholesky a symmetric one (only symmetric perturbations stay valid)
    d = rng.standard_normal(x.shape)
    if name == "cholesky":
        d = (d + d.T) / 2
    eps = 1e-6
    numeric = (float(tj_loss(tj.asarray(x + eps * d))) - float(tj_loss(tj.asarray(x - eps * d)))) / (2 * eps)
    assert math.isclose(float(np.sum(g * d)), numeric, rel_tol=1e-6, abs_tol=1e-8)


def test_gradient_under_jit_equals_eager(rng, jit_backend):
    def loss(a, s):
        return (tj.sum(tj.linalg.inv(a)) + tj.linalg.slogdet(a).logabsdet
                + tj.sum(tj.linalg.cholesky(s)) + tj.sum(tj.linalg.eigh(s)[0] ** 3)
                + tj.sum(tj.linalg.svdvals(a)))
    a = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    s = _spd(rng, (3, 3))
    eager = tj.grad(loss, argnums=(0, 1))(tj.asarray(a), tj.asarray(s))
    compiled = jitted(tj.grad(loss, argnums=(0, 1)), jit_backend)(tj.asarray(a), tj.asarray(s))
    for e, c in zip(eager, compiled):
        assert_close(c, e.numpy(), rtol=1e-12, atol=1e-13)


def test_svd_full_matrices_gradient_is_refused():
    x = tj.asarray(np.ones((3, 2)))
    with pytest.raises(NotImplementedError, match="full_matrices=False"):
        tj.grad(lambda t: tj.sum(tj.linalg.svd(t)[0]))(x)


def test_complex_matrices_match_numpy(rng):
    a = rng.standard_normal((2, 4, 3)) + 1j * rng.standard_normal((2, 4, 3))
    s = a[:, :3, :3].copy()
    h = s @ np.conj(np.swapaxes(s, -1, -2)) + 3 * np.eye(3)
    A, S, H = tj.asarray(a), tj.asarray(s), tj.asarray(h)
    assert_close(tj.linalg.pinv(A), np.linalg.pinv(a), rtol=1e-10, atol=1e-12)
    assert_close(tj.linalg.inv(S), np.linalg.inv(s), rtol=1e-10)
    assert_close(tj.linalg.det(S), np.linalg.det(s), rtol=1e-10)
    sign, logabs = tj.linalg.slogdet(S)
    assert sign.dtype == tj.complex128 and logabs.dtype == tj.float64
    assert_close(sign, np.linalg.slogdet(s)[0], rtol=1e-10)
    w, v = tj.linalg.eigh(H)
    assert w.dtype == tj.float64
    assert_close(w, np.linalg.eigvalsh(h), rtol=1e-10)
    assert_close(np.asarray(v) @ (np.asarray(w)[..., None] * np.conj(np.swapaxes(np.asarray(v), -1, -2))), h,
                 rtol=1e-10, atol=1e-12)
    assert_close(tj.linalg.cholesky(H, upper=True), np.conj(np.swapaxes(np.linalg.cholesky(h), -1, -2)),
                 rtol=1e-10)
    assert tj.linalg.svdvals(A).dtype == tj.float64
    assert_close(tj.linalg.svdvals(A), np.linalg.svd(a, compute_uv=False), rtol=1e-10)
    assert_close(tj.linalg.matrix_norm(A, ord="nuc"), np.linalg.matrix_norm(a, ord="nuc"), rtol=1e-10)
    assert_close(tj.linalg.vector_norm(A, ord=3), np.linalg.vector_norm(a, ord=3), rtol=1e-10)
    rhs = a[:, :3, :2].copy()
    assert_close(tj.linalg.solve(S, tj.asarray(rhs)), np.linalg.solve(s, rhs), rtol=1e-10)
    with pytest.raises(NotImplementedError, match="linalg.det for complex"):
        tj.grad(lambda x: tj.abs(tj.linalg.det(x)))(tj.asarray(s[0]))
