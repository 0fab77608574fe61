"""``__array_namespace_info__``: what this namespace supports (Array API inspection utilities)."""
from __future__ import annotations

from typing import Any

from .. import dtypes as dt
from ..tensors import Device

_KINDS: dict[str, tuple[Any, ...]] = {
    "bool": (dt.bool_,),
    "signed integer": (dt.int8, dt.int16, dt.int32, dt.int64),
    "unsigned integer": (dt.uint8, dt.uint16, dt.uint32, dt.uint64),
    "integral": dt.INT_DTYPES,
    "real floating": (dt.float32, dt.float64),
    "complex floating": dt.COMPLEX_DTYPES,
    "numeric": tuple(d for d in dt.NUMERIC_DTYPES if d not in (dt.float16, dt.bfloat16)),
}


class Info:
    """The inspection namespace returned by ``tracejit.__array_namespace_info__()``."""

    def capabilities(self) -> dict[str, Any]:
        # boolean masks and nonzero/unique work eagerly (under jit they raise ConcretizationError)
        return {"boolean indexing": True, "data-dependent shapes": True, "max dimensions": None}

    def default_device(self) -> Device:
        from ..device import default_device
        return default_device()

    def default_dtypes(self, *, device: Any = None) -> dict[str, Any]:
        return {"real floating": dt.default_float, "complex floating": dt.default_complex,
                "integral": dt.default_int, "indexing": dt.int64}

    def dtypes(self, *, device: Any = None, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
        # the standard's dtypes: float16 and bfloat16 work in tracejit but are not among them
        standard = tuple(d for d in dt.ALL_DTYPES if d not in (dt.float16, dt.bfloat16))
        if kind is None:
            chosen: tuple[Any, ...] = standard
        else:
            kinds = (kind,) if isinstance(kind, str) else tuple(kind)
            unknown = [k for k in kinds if k not in _KINDS]
            if unknown:
                raise ValueError(f"unknown dtype kind(s) {unknown}; expected one of {sorted(_KINDS)}")
            chosen = tuple(d for d in standard if any(d in _KINDS[k] for k in kinds))
        return {d.name: d for d in chosen}

    def devices(self) -> list[Device]:
        out = [Device("cpu")]
        try:
            from runtime import cuda
            if cuda.is_available():
                out.append(Device("cuda", 0))
        except Exception:  # noqa: BLE001 - no GPU stack: CPU only
            pass
        return out


def __array_namespace_info__() -> Info:  # noqa: N807
    """The Array API inspection namespace (capabilities, default device and dtypes, dtypes, devices)."""
    return Info()
