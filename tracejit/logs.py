"""``TRACEJIT_LOG=compiles,recompiles,fusion,kernels``: what to log, through ``logging``.

Each topic is a logger under ``tracejit.``; the variable turns the listed ones on at INFO with
a handler on stderr (``all`` turns on every topic).  Without it, they follow the application's
own logging configuration.
"""
from __future__ import annotations

import logging
import os

TOPICS = ("compiles", "recompiles", "fusion", "kernels")


def topic(name: str) -> logging.Logger:
    return logging.getLogger(f"tracejit.{name}")


def configure(spec: str | None = None) -> None:
    spec = os.environ.get("TRACEJIT_LOG", "") if spec is None else spec
    wanted = {t.strip() for t in spec.split(",") if t.strip()}
    if "all" in wanted:
        wanted = set(TOPICS)
    unknown = wanted - set(TOPICS)
    if unknown:
        logging.getLogger("tracejit").warning("TRACEJIT_LOG: unknown topics %s (known: %s)",
                                              ", ".join(sorted(unknown)), ", ".join(TOPICS))
    for name in wanted & set(TOPICS):
        log = topic(name)
        log.setLevel(logging.INFO)
        if not log.handlers:
            h = logging.StreamHandler()
            h.setFormatter(logging.Formatter(f"[tracejit {name}] %(message)s"))
            log.addHandler(h)


configure()
