"""``tracejit.linalg``: the Array API linear-algebra extension (see ``tracejit/api/linalg_ext.py``)."""
from .api.linalg_ext import *  # noqa: F403
from .api.linalg_ext import __all__  # noqa: F401
