"""The Array API namespace, re-exported by ``tracejit``."""
from .creation import (
                       arange,
                       asarray,
                       empty,
                       empty_like,
                       eye,
                       from_dlpack,
                       full,
                       full_like,
                       linspace,
                       meshgrid,
                       ones,
                       ones_like,
                       tril,
                       triu,
                       zeros,
                       zeros_like,
)
from .elementwise import *  # noqa: F403
from .elementwise import abs, clip, logical_and, logical_not, logical_or, logical_xor, pow, round, where
from .indexing import getitem, setitem, take
from .linalg import matmul, tensordot, vecdot
from .manipulation import (
                       astype,
                       broadcast_arrays,
                       broadcast_shapes,
                       broadcast_to,
                       expand_dims,
                       flip,
                       matrix_transpose,
                       permute_dims,
                       reshape,
                       squeeze,
)
from .statistical import all, any, argmax, argmin, max, mean, min, prod, std, sum, var

__all__ = [n for n in dir() if not n.startswith("_")]
