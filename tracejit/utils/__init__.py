"""Utilities around training: ``tracejit.utils.tensorboard.SummaryWriter``."""
from . import tensorboard

__all__ = ["tensorboard"]
