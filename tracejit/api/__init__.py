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
from .elementwise import __all__ as _elementwise_all
from .indexing import getitem, setitem, take
from .info import __array_namespace_info__
from .linalg import matmul, tensordot, vecdot
from .manipulation import (
    astype,
    broadcast_arrays,
    broadcast_shapes,
    broadcast_to,
    concat,
    expand_dims,
    flip,
    matrix_transpose,
    moveaxis,
    pad,
    permute_dims,
    repeat,
    reshape,
    roll,
    squeeze,
    stack,
    tile,
    unstack,
)
from .searching import argsort, count_nonzero, nonzero, searchsorted, sort
from .sets import unique_all, unique_counts, unique_inverse, unique_values
from .statistical import (
    all,
    any,
    argmax,
    argmin,
    cumulative_prod,
    cumulative_sum,
    diff,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)

__all__ = list(_elementwise_all) + [
    "arange", "asarray", "empty", "empty_like", "eye", "from_dlpack", "full", "full_like", "linspace",
    "meshgrid", "ones", "ones_like", "tril", "triu", "zeros", "zeros_like",
    "getitem", "setitem", "take", "__array_namespace_info__", "matmul", "tensordot", "vecdot",
    "astype", "broadcast_arrays", "broadcast_shapes", "broadcast_to", "concat", "expand_dims", "flip",
    "matrix_transpose", "moveaxis", "pad", "permute_dims", "repeat", "reshape", "roll", "squeeze", "stack",
    "tile",
    "unstack", "argsort", "count_nonzero", "nonzero", "searchsorted", "sort",
    "unique_all", "unique_counts", "unique_inverse", "unique_values",
    "all", "any", "argmax", "argmin", "cumulative_prod", "cumulative_sum", "diff", "max", "mean", "min",
    "prod", "std", "sum", "var",
]
