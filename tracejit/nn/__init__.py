"""Neural-network building blocks: ``tracejit.nn.functional`` and the module classes."""
from importlib.util import find_spec as _find_spec

from . import functional, utils

__all__ = ["functional", "utils"]

if _find_spec(f"{__name__}.modules") is not None:   # the module classes, once they exist
    from . import modules as _modules
    from .modules import *  # noqa: F403
    __all__ += list(getattr(_modules, "__all__", [n for n in dir(_modules) if not n.startswith("_")]))

from . import conv as _conv  # noqa: E402
from . import normalization as _normalization  # noqa: E402
from . import pooling as _pooling  # noqa: E402

for _layers in (_conv, _pooling, _normalization):   # the layer classes (their functions are in functional)
    globals().update({n: getattr(_layers, n) for n in _layers.__all__ if n[0].isupper()})
    __all__ += [n for n in _layers.__all__ if n[0].isupper()]

from .attention import MultiheadAttention  # noqa: E402
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: E402
from .transformer import TransformerEncoderLayer  # noqa: E402

__all__ += ["MultiheadAttention", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
            "TransformerEncoderLayer"]
from .loss_modules import *  # noqa: E402, F403
from .loss_modules import __all__ as _loss_modules_all  # noqa: E402

__all__ += _loss_modules_all
from . import parallel  # noqa: E402  (DistributedDataParallel)

__all__ += ["parallel"]
