"""Neural-network building blocks: ``tracejit.nn.functional`` and the module classes."""
from importlib.util import find_spec as _find_spec

from . import functional

__all__ = ["functional"]

if _find_spec(f"{__name__}.modules") is not None:   # the module classes, once they exist
    from . import modules as _modules
    from .modules import *  # noqa: F403
    __all__ += list(getattr(_modules, "__all__", [n for n in dir(_modules) if not n.startswith("_")]))

from . import parallel  # noqa: E402  (DistributedDataParallel)

__all__ += ["parallel"]
