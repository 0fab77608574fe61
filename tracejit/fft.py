"""``tracejit.fft``: the Array API Fourier-transform extension (see ``tracejit/api/fft.py``)."""
from .api.fft import *  # noqa: F403
from .api.fft import __all__  # noqa: F401
