"""Optimizers and learning-rate schedules with PyTorch's names and semantics.

``tj.optim.SGD`` / ``Adam`` / ``AdamW`` / ``RMSprop`` / ``Adagrad`` update parameters in place
from their ``.grad``; ``tj.optim.lr_scheduler`` changes their param groups' learning rates
between steps.  Both work unchanged inside a jitted training step.
"""
from . import lr_scheduler
from .adagrad import Adagrad
from .optimizer import SGD, Adam, AdamW, Optimizer, ParamGroup
from .rmsprop import RMSprop

__all__ = ["Optimizer", "ParamGroup", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
