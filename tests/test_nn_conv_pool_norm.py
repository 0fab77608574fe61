"""Convolution, pooling and normalization layers: forward and backward against PyTorch (float32,
atol 1e-4 / rtol 1e-3) over odd sizes, strides, padding, dilation and groups; a float64 NumPy
reference for the convolution itself; PyTorch's parameter names so a torch state_dict loads;
batch norm's running statistics and train/eval under jit; kernel counts under jit."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import tracejit as tj
from tracejit import fusion

torch = pytest.importorskip("torch")
F, nn = tj.nn.functional, tj.nn
TF = torch.nn.functional
ATOL, RTOL = 1e-4, 1e-3


def _t(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _close(actual, expected, what=""):
    a = np.asarray(actual)
    e = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    np.testing.assert_allclose(a, e, atol=ATOL, rtol=RTOL, err_msg=what)


def check_fwd_bwd(tj_fn, torch_fn, *arrays, grad=None):
    """``tj_fn`` and ``torch_fn`` on the same float32 arrays: equal outputs, and equal gradients of
    ``sum(out * g)`` for a random ``g`` with respect to every input."""
    rng = np.random.default_rng(len(arrays))
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    jt = [tj.asarray(a, requires_grad=True) for a in arrays]
    ty, jy = torch_fn(*tt), tj_fn(*jt)
    _close(jy, ty, "forward")
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32) if grad is None else grad
    (ty * torch.tensor(g)).sum().backward()
    (jy * tj.asarray(g)).sum().backward()
    for i, (j, t) in enumerate(zip(jt, tt)):
        _close(j.grad, t.grad, f"gradient of input {i}")


CONV2D_CASES = [
    dict(),
    dict(stride=2),
    dict(padding=1),
    dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1)),
    dict(groups=2, stride=2, padding=1),
    dict(groups=4, padding="same"),
    dict(padding="valid", dilation=2),
]


def _ids(kw):
    return ",".join(f"{k}={v}" for k, v in kw.items()) or "plain"


@pytest.mark.parametrize("kw", CONV2D_CASES, ids=_ids)
def test_conv2d_matches_torch(kw, rng):
    groups = kw.get("groups", 1)
    x, w, b = _t(rng, 2, 4, 9, 7), _t(rng, 6 if groups != 4 else 8, 4 // groups, 3, 2), None
    b = _t(rng, w.shape[0])
    check_fwd_bwd(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: TF.conv2d(x, w, b, **kw), x, w, b)


def _conv2d_float64(x, w, b, stride, padding, dilation):
    """Direct convolution in float64 (the definition, loop over the kernel's offsets)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    o, _, kh, kw = w.shape
    oh = (x.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((x.shape[0], o, oh, ow))
    for i, j in itertools.product(range(kh), range(kw)):
        patch = x[:, :, i * dilation[0]:i * dilation[0] + stride[0] * (oh - 1) + 1:stride[0],
                  j * dilation[1]:j * dilation[1] + stride[1] * (ow - 1) + 1:stride[1]]
        y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.float64))
    return y + b.astype(np.float64)[None, :, None, None]


def test_conv2d_matches_float64_definition(rng):
    x, w, b = _t(rng, 3, 5, 11, 8), _t(rng, 7, 5, 3, 4), _t(rng, 7)
    y = F.conv2d(tj.asarray(x), tj.asarray(w), tj.asarray(b), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    np.testing.assert_allclose(np.asarray(y), _conv2d_float64(x, w, b, (2, 1), (1, 2), (1, 2)),
                               rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kw", [dict(), dict(stride=3, padding=2, dilation=2, groups=3),
                                dict(padding="same")])
def test_conv1d_matches_torch(kw, rng):
    g = kw.get("groups", 1)
    x, w, b = _t(rng, 2, 6, 13), _t(rng, 9, 6 // g, 4), _t(rng, 9)
    check_fwd_bwd(lambda x, w, b: F.conv1d(x, w, b, **kw), lambda x, w, b: TF.conv1d(x, w, b, **kw), x, w, b)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1, output_padding=1),
                                dict(stride=(3, 2), padding=(2, 0), dilation=(2, 1), groups=2)])
def test_conv_transpose2d_matches_torch(kw, rng):
    g = kw.get("groups", 1)
    x, w, b = _t(rng, 2, 4, 5, 6), _t(rng, 4, 6 // g, 3, 2), _t(rng, 6)
    check_fwd_bwd(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw),
                  lambda x, w, b: TF.conv_transpose2d(x, w, b, **kw), x, w, b)


def test_conv_transpose1d_matches_torch(rng):
    x, w = _t(rng, 3, 2, 7), _t(rng, 2, 5, 3)
    check_fwd_bwd(lambda x, w: F.conv_transpose1d(x, w, stride=2, padding=1),
                  lambda x, w: TF.conv_transpose1d(x, w, stride=2, padding=1), x, w)


def test_unbatched_conv_input(rng):
    x, w = _t(rng, 3, 6, 6), _t(rng, 4, 3, 3, 3)
    check_fwd_bwd(lambda x, w: F.conv2d(x, w, padding=1), lambda x, w: TF.conv2d(x, w, padding=1), x, w)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(3, 2), stride=2, ceil_mode=True),
                                dict(kernel_size=2, stride=1, dilation=2), dict(kernel_size=3, padding=1),
                                dict(kernel_size=(2, 3), ceil_mode=True)])
def test_max_pool2d_matches_torch(kw, rng):
    check_fwd_bwd(lambda x: F.max_pool2d(x, **kw), lambda x: TF.max_pool2d(x, **kw), _t(rng, 2, 3, 9, 7))


def test_max_pool_ties_send_the_gradient_to_the_first_maximum():
    x = np.zeros((1, 1, 4, 4), np.float32)           # every window is all ties
    check_fwd_bwd(lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), x)
    check_fwd_bwd(lambda x: F.max_pool2d(x, 3, 1, 1), lambda x: TF.max_pool2d(x, 3, 1, 1), x)


def test_max_pool_nan_is_the_maximum(rng):
    x = _t(rng, 1, 2, 4, 6)
    x[0, 0, 1, 1] = x[0, 1, 2, 5] = np.nan
    check_fwd_bwd(lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), x)
    got = F.max_pool2d(tj.asarray(x), 3, 1, 1).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(TF.max_pool2d(torch.tensor(x), 3, 1, 1).numpy()))


def test_max_pool1d_matches_torch(rng):
    check_fwd_bwd(lambda x: F.max_pool1d(x, 3, 2, 1), lambda x: TF.max_pool1d(x, 3, 2, 1), _t(rng, 2, 3, 10))


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=2, divisor_override=3)])
def test_avg_pool2d_matches_torch(kw, rng):
    check_fwd_bwd(lambda x: F.avg_pool2d(x, **kw), lambda x: TF.avg_pool2d(x, **kw), _t(rng, 2, 3, 9, 8))


def test_avg_pool1d_matches_torch(rng):
    check_fwd_bwd(lambda x: F.avg_pool1d(x, 4, 3, 2, ceil_mode=True),
                  lambda x: TF.avg_pool1d(x, 4, 3, 2, ceil_mode=True), _t(rng, 2, 3, 11))


@pytest.mark.parametrize("size", [1, (3, 4), (4, 3), (5, None)])
def test_adaptive_avg_pool2d_matches_torch(size, rng):
    check_fwd_bwd(lambda x: F.adaptive_avg_pool2d(x, size), lambda x: TF.adaptive_avg_pool2d(x, size),
                  _t(rng, 2, 3, 9, 8))


def test_adaptive_avg_pool1d_matches_torch(rng):
    check_fwd_bwd(lambda x: F.adaptive_avg_pool1d(x, 4), lambda x: TF.adaptive_avg_pool1d(x, 4),
                  _t(rng, 2, 3, 11))


@pytest.mark.parametrize("kw", [dict(scale_factor=2), dict(scale_factor=(3, 1)), dict(size=(5, 11)),
                                dict(scale_factor=1.5), dict(size=(18, 14))])
def test_interpolate_nearest_matches_torch(kw, rng):
    check_fwd_bwd(lambda x: F.interpolate(x, **kw), lambda x: TF.interpolate(x, **kw), _t(rng, 2, 3, 9, 7))


def test_batch_norm_functional_matches_torch(rng):
    x, w, b = _t(rng, 5, 3, 4, 3), _t(rng, 3), _t(rng, 3)
    rm, rv = _t(rng, 3), np.abs(_t(rng, 3)) + 0.5
    for training in (True, False):
        trm, trv = torch.tensor(rm), torch.tensor(rv)
        jrm, jrv = tj.asarray(rm), tj.asarray(rv)
        check_fwd_bwd(lambda x, w, b, s=(jrm, jrv, training): F.batch_norm(x, *s[:2], w, b, s[2], 0.3, 1e-3),
                      lambda x, w, b, s=(trm, trv, training): TF.batch_norm(x, *s[:2], w, b, s[2], 0.3, 1e-3),
                      x, w, b)
        _close(jrm, trm, "running_mean")
        _close(jrv, trv, "running_var")


@pytest.mark.parametrize("shape,groups", [((3, 6, 5, 4), 3), ((2, 4, 7), 1), ((2, 6, 3, 3), 6)])
def test_group_norm_matches_torch(shape, groups, rng):
    x, w, b = _t(rng, *shape), _t(rng, shape[1]), _t(rng, shape[1])
    check_fwd_bwd(lambda x, w, b: F.group_norm(x, groups, w, b),
                  lambda x, w, b: TF.group_norm(x, groups, w, b), x, w, b)


def test_rms_norm_matches_torch(rng):
    x, w = _t(rng, 3, 5, 7), _t(rng, 5, 7)
    check_fwd_bwd(lambda x, w: F.rms_norm(x, (5, 7), w), lambda x, w: TF.rms_norm(x, (5, 7), w), x, w)
    check_fwd_bwd(lambda x: F.rms_norm(x, 7, eps=1e-3), lambda x: TF.rms_norm(x, (7,), eps=1e-3), x)


# ------------------------------------------------------------------ modules and state dicts

def _copy_from_torch(module, tmodule):
    sd = {k: v.detach().numpy() for k, v in tmodule.state_dict().items()}
    module.load_state_dict(sd)


MODULE_PAIRS = [
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
     lambda: torch.nn.Conv2d(4, 6, 3, 2, 1, groups=2), (2, 4, 7, 6)),
    (lambda: nn.Conv2d(4, 5, (2, 3), padding=1, padding_mode="reflect", bias=False),
     lambda: torch.nn.Conv2d(4, 5, (2, 3), padding=1, padding_mode="reflect", bias=False), (2, 4, 6, 5)),
    (lambda: nn.Conv1d(3, 4, 3, padding=2, padding_mode="circular"),
     lambda: torch.nn.Conv1d(3, 4, 3, padding=2, padding_mode="circular"), (2, 3, 7)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
     lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (2, 4, 5, 4)),
    (lambda: nn.BatchNorm2d(4), lambda: torch.nn.BatchNorm2d(4), (3, 4, 5, 3)),
    (lambda: nn.BatchNorm1d(4, affine=False), lambda: torch.nn.BatchNorm1d(4, affine=False), (6, 4)),
    (lambda: nn.GroupNorm(2, 4), lambda: torch.nn.GroupNorm(2, 4), (2, 4, 3, 3)),
    (lambda: nn.RMSNorm((3, 3)), lambda: torch.nn.RMSNorm((3, 3)), (2, 4, 3, 3)),
    (lambda: nn.MaxPool2d(3, 2, 1), lambda: torch.nn.MaxPool2d(3, 2, 1), (2, 4, 7, 6)),
    (lambda: nn.AvgPool2d(2), lambda: torch.nn.AvgPool2d(2), (2, 4, 7, 6)),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: torch.nn.AdaptiveAvgPool2d((2, 3)), (2, 4, 7, 6)),
    (lambda: nn.Upsample(scale_factor=2), lambda: torch.nn.Upsample(scale_factor=2), (2, 4, 3, 2)),
]


@pytest.mark.parametrize("make,make_torch,shape", MODULE_PAIRS, ids=lambda v: "" if callable(v) else str(v))
def test_module_state_dict_layout_and_output_match_torch(make, make_torch, shape, rng):
    m, tm = make(), make_torch()
    sd, tsd = m.state_dict(), tm.state_dict()
    assert list(sd) == list(tsd)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in tsd.items()}
    with torch.no_grad():      # random statistics and affine values, so loading is visible
        for v in tm.state_dict().values():
            if v.dtype.is_floating_point:
                v.copy_(torch.rand_like(v) + 0.5)
    _copy_from_torch(m, tm)
    x = _t(rng, *shape)
    check_fwd_bwd(m, tm, x)
    for k, v in tm.state_dict().items():     # training-mode batch norms updated their statistics alike
        _close(m.state_dict()[k], v, k)


def test_batch_norm_eval_and_cumulative_momentum_match_torch(rng):
    m, tm = nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)
    for _ in range(3):
        x = _t(rng, 4, 3, 2, 5)
        _close(m(tj.asarray(x)), tm(torch.tensor(x)), "train")
    for k, v in tm.state_dict().items():
        _close(m.state_dict()[k], v, k)
    m.eval(), tm.eval()
    x = _t(rng, 4, 3, 2, 5)
    before = m.running_mean.numpy().copy()
    _close(m(tj.asarray(x)), tm(torch.tensor(x)), "eval")
    np.testing.assert_array_equal(m.running_mean.numpy(), before)


def test_dropout2d_zeroes_whole_channels():
    tj.manual_seed(3)
    x = tj.ones((64, 8, 3, 5))
    y = F.dropout2d(x, 0.5).numpy()
    per_channel = y.reshape(64, 8, -1)
    assert np.all(per_channel == per_channel[:, :, :1])          # one decision per (sample, channel)
    assert set(np.unique(per_channel)) == {0.0, 2.0}
    assert 0.35 < (per_channel[:, :, 0] == 0).mean() < 0.65
    d = nn.Dropout2d(0.5)
    d.eval()
    np.testing.assert_array_equal(d(x).numpy(), x.numpy())


def test_layer_errors_name_the_problem():
    x = tj.ones((2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"conv2d: input with 3 channels, weight \(4, 2, 3, 3\)"):
        F.conv2d(x, tj.ones((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="conv2d: input spatial size"):
        F.conv2d(x, tj.ones((4, 3, 7, 7)))
    with pytest.raises(ValueError, match=r"conv2d: input must be 4-D \(N, C, H, W\)"):
        F.conv2d(tj.ones((5, 5)), tj.ones((4, 3, 3, 3)))
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        F.conv2d(x, tj.ones((4, 3, 3, 3)), stride=2, padding="same")
    with pytest.raises(TypeError, match="stride must be an int or a tuple of 2 ints"):
        F.conv2d(x, tj.ones((4, 3, 3, 3)), stride=(1, 2, 3))
    with pytest.raises(ValueError, match="max_pool2d: padding"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="BatchNorm2d: expected 3 channels"):
        nn.BatchNorm2d(3)(tj.ones((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(tj.ones((1, 3)))
    with pytest.raises(ValueError, match="group_norm: 3 channels are not divisible into num_groups=2"):
        F.group_norm(x, 2)
    with pytest.raises(NotImplementedError, match="only 'nearest'"):
        nn.Upsample(scale_factor=2, mode="bilinear")


# ------------------------------------------------------------------ under jit

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, groups=2)
        self.gn = nn.GroupNorm(2, 8)
        self.up = nn.Upsample(scale_factor=2)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)        # 9x9 -> 4x4
        x = F.relu(self.gn(self.conv2(self.up(x))))                   # 8x8 -> 3x3
        x = F.dropout2d(x, 0.25, self.training)
        return self.head(F.adaptive_avg_pool2d(x, 1).reshape(x.shape[0], -1))


def test_jitted_cnn_step_equals_eager_and_eval_switches_the_trace(rng):
    tj.manual_seed(0)
    models = [SmallCNN() for _ in range(2)]
    models[1].load_state_dict({k: v.numpy() for k, v in models[0].state_dict().items()})
    opts = [tj.optim.SGD(m.parameters(), lr=0.1) for m in models]

    def make_step(model, opt):
        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return step

    eager, jitted = make_step(models[0], opts[0]), tj.jit(make_step(models[1], opts[1]))
    for i in range(2):
        x, y = tj.asarray(_t(rng, 6, 3, 9, 9)), tj.asarray(rng.integers(0, 5, 6))
        tj.manual_seed(10 + i)
        le = float(eager(x, y))
        tj.manual_seed(10 + i)
        lj = float(jitted(x, y))
        assert abs(le - lj) < 1e-5
    for (k, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    assert int(models[1].bn1.num_batches_tracked.numpy()) == 2

    # eval: the cached forward must not reuse the training trace (batch statistics, updates)
    predict = [lambda x, m=m: m(x) for m in models]
    jpredict = tj.jit(predict[1])
    x = tj.asarray(_t(rng, 4, 3, 9, 9))
    tj.manual_seed(5)
    predict[0](x)
    tj.manual_seed(5)
    jpredict(x)                                                  # traced in training mode
    for m in models:
        m.eval()
    stats = models[1].bn1.running_mean.numpy().copy()
    np.testing.assert_allclose(jpredict(x).numpy(), predict[0](x).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(models[1].bn1.running_mean.numpy(), stats)
    x1 = tj.asarray(_t(rng, 1, 3, 9, 9))                          # eval works for a single sample
    np.testing.assert_allclose(jpredict(x1).numpy(), predict[0](x1).numpy(), rtol=1e-4, atol=1e-5)
    models[1].train()
    jpredict(x)
    assert not np.array_equal(models[1].bn1.running_mean.numpy(), stats)


def _steps(f, *args):
    plan = tj.jit(f).lower(*args).entry.executable.plan
    return [("matmul" if isinstance(s, fusion.ExternPlan) else "kernel") for s in plan.steps]


def test_conv_bias_relu_is_im2col_gemm_and_one_epilogue_kernel(rng):
    x, w, b = tj.asarray(_t(rng, 4, 3, 10, 10)), tj.asarray(_t(rng, 8, 3, 3, 3)), tj.asarray(_t(rng, 8))
    # no padding: one kernel writes the columns, the GEMM, one kernel adds the bias and applies relu
    assert _steps(lambda x, w, b: F.relu(F.conv2d(x, w, b)), x, w, b) == ["kernel", "matmul", "kernel"]
    # batch norm (eval) and relu after the convolution join that same epilogue kernel
    bn = nn.BatchNorm2d(8).eval()
    with tj.no_grad():      # (with grad, the relu mask and the normalized value are kept for backward)
        steps = _steps(lambda x, w, b: F.relu(bn(F.conv2d(x, w, b, padding=1))), x, w, b)
    assert steps.count("matmul") == 1 and steps[steps.index("matmul") + 1:] == ["kernel"]
    with tj.no_grad():
        np.testing.assert_allclose(tj.jit(lambda x: F.relu(bn(F.conv2d(x, w, b, padding=1))))(x).numpy(),
                                   F.relu(bn(F.conv2d(x, w, b, padding=1))).numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ lowered for a GPU

def _cnn_loss(x, w1, b1, w2, gamma, beta, y):
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1, padding=1)), 2)
    h = F.batch_norm(F.conv2d(h, w2, stride=2, groups=2), None, None, gamma, beta, training=True)
    h = F.group_norm(F.relu(h), 2) + F.avg_pool2d(F.interpolate(h, scale_factor=2), 2)
    logits = F.adaptive_avg_pool2d(h, 1).reshape(h.shape[0], -1)
    return F.cross_entropy(logits, y)


def test_cnn_training_step_lowers_to_ptx_that_assembles():
    from tests.test_gpu_lowering import lower_both
    S = tj.spec
    specs = [S((4, 3, 10, 10)), S((8, 3, 3, 3)), S((8,)), S((8, 4, 3, 3)), S((8,)), S((8,)),
             S((4,), tj.int64)]
    grad_step = tj.grad(_cnn_loss, argnums=(1, 2, 3, 4, 5))
    cpu, gpu = lower_both(grad_step, *specs)
    assert len(gpu.kernels) > 5
    transposed = lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)  # noqa: E731
    lower_both(transposed, S((2, 4, 5, 5)), S((4, 3, 3, 3)))
