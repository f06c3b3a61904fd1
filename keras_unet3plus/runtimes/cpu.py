"""What this CPU can do fast: reduced precision is only worth running where the silicon has it.

bf16 pays off with AVX512_BF16 or AMX (otherwise TensorFlow emulates it, slower than fp32); int8
with VNNI (AVX512_VNNI, AVX_VNNI) or AMX. Read from ``/proc/cpuinfo`` (Linux); elsewhere nothing
is claimed and fp32 runs.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["CpuInfo", "cpu_info", "precision_note"]

_BF16 = ("avx512_bf16", "amx_bf16")
_INT8 = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, logical cores, and the instruction-set flags that matter here."""

    name: str
    cores: int
    flags: frozenset

    @property
    def fast_bf16(self) -> bool:
        return any(f in self.flags for f in _BF16)

    @property
    def fast_int8(self) -> bool:
        return any(f in self.flags for f in _INT8)

    @property
    def vector(self) -> str:
        """The widest vector unit: avx512, avx2, or ``?``."""
        return "avx512" if "avx512f" in self.flags else "avx2" if "avx2" in self.flags else "?"

    def summary(self) -> str:
        extra = [n for n, ok in (("bf16", self.fast_bf16), ("int8-vnni", self.fast_int8)) if ok]
        return f"{self.name}, {self.cores} cores, {self.vector}" + (f" + {', '.join(extra)}" if extra else "")


def _parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    name, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return name, flags


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached)."""
    name, flags = "", frozenset[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            name, flags = _parse_cpuinfo(fh.read())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuInfo(name or platform.processor() or platform.machine(), cores, flags)


def precision_note(precision: str, info: CpuInfo | None = None) -> str:
    """Empty when ``precision`` has hardware support here, else why it will run slowly."""
    info = info or cpu_info()
    if precision == "bf16" and not info.fast_bf16:
        return "this CPU has no AVX512_BF16/AMX: bf16 is emulated and slower than fp32"
    if precision.startswith("int8") and not info.fast_int8:
        return "this CPU has no VNNI/AMX: int8 runs on plain AVX2 integer units"
    return ""
