"""A fused custom op with its gradient: swish(x) = x * sigmoid(beta * x).

    python examples/custom_op.py
"""
import numpy as np

import tracejit as tj
from tracejit.custom_ops import scalar as s


def swish_vjp(g, out, x, *, beta):
    sig = tj.nn.functional.sigmoid(x * beta)
    return (g * (sig + beta * x * sig * (1 - sig)),)


swish = tj.custom_op(
    "swish",
    lambda x, *, beta: (x / (1 + np.exp(-beta * x))).astype(x.dtype),   # NumPy reference (eager)
    lower=lambda x, *, beta: x * s.sigmoid(x * beta),                   # fuses into kernels
    vjp=swish_vjp)


@tj.jit
def loss_and_grad(x):
    return tj.value_and_grad(lambda x: (swish(x * 2.0, beta=1.5) ** 2).mean())(x)


x = tj.asarray(np.linspace(-2, 2, 8), dtype=tj.float32)
loss, grad = loss_and_grad(x)
eager_loss, eager_grad = tj.value_and_grad(lambda x: (swish(x * 2.0, beta=1.5) ** 2).mean())(x)
print("kernels:", len(loss_and_grad.lower(x).kernels), "| loss", float(loss), "| eager", float(eager_loss))
print("max |jit - eager| of the gradient:", float(tj.max(tj.abs(grad - eager_grad))))
