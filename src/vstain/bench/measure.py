"""How the benchmarks measure: peak memory over a block, device sync, what the device supports.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on a CPU it is the process's peak
resident set (``VmHWM``, reset between measurements through ``/proc/self/clear_refs``), i.e.
everything the process holds, libraries included.
"""

from __future__ import annotations

import gc
import platform
from pathlib import Path

import torch

__all__ = ["PeakMemory", "bf16_supported", "clean", "describe_device", "gib", "synchronize"]


class PeakMemory:
    """Peak memory over a ``with`` block: CUDA allocator peak, or the process's peak RSS on CPU.

    Parameters
    ----------
    device
        The device the block runs on.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes: int | None = None

    def __enter__(self) -> "PeakMemory":
        self.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        self.read()

    def reset(self) -> None:
        """Start a new peak here."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # "5" resets VmHWM (Linux >= 4.0), so each block gets its own peak
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    def read(self) -> int | None:
        """The peak since :meth:`reset`, in bytes (also kept in ``peak_bytes``)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak_bytes = _peak_rss_bytes()
        return self.peak_bytes


def _peak_rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on a CPU), so wall times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gib(value: int | None) -> float | None:
    """Bytes as GiB rounded to 3 decimals (``None`` stays ``None``)."""
    return None if value is None else round(value / 2**30, 3)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 runs natively here (CUDA with bf16, or a CPU with AVX512-BF16 / AMX).

    Elsewhere CPU bf16 is emulated and slower than fp32, so the benchmarks do not time it.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def clean(device: torch.device) -> None:
    """Free what the previous measurement left (garbage, CUDA cache)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def describe_device(device: torch.device) -> str:
    """A one-line name of the device, e.g. ``NVIDIA H200`` or ``CPU x86_64 (2 threads)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
