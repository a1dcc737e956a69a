"""Inference benchmark: seconds per field (all three stains), reference tiling vs the fast modes.

Random-weight networks at the reference configurations (LUPI-32 for nuclei, two Tiramisu-48 for
lipids and cytoplasm) - weights do not change the arithmetic, so the timings hold for trained
models. The three stains of one field run through :class:`vstain.inference.engine.FieldEngine`,
the engine ``vstain predict`` uses, in ``reference`` mode (512² tiles, stride 256, pyramid
blending, fp32) and in the fast modes (``tiles``, ``whole``) with the settings the device
supports (bf16 autocast, channels-last, ``torch.compile`` on CUDA).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from vstain.bench.measure import PeakMemory, bf16_supported, clean, gib, synchronize
from vstain.bench.sizes import BenchSizes
from vstain.inference.engine import FieldEngine, StainNetworks
from vstain.inference.tiler import Tiler

__all__ = ["Variant", "bench_inference", "inference_variants", "stain_networks"]


@dataclass(frozen=True)
class Variant:
    """One inference configuration."""

    label: str
    mode: str
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False


def stain_networks(*, tiny: bool = False, seed: int = 0) -> StainNetworks:
    """Nuclei (LUPI-32) + lipids + cytoplasm (Tiramisu-48), random weights, eval mode.

    Parameters
    ----------
    tiny
        Shrink them (8 filters, 1-1 blocks) for tests of the bench itself.
    seed
        Seed of the random weights.
    """
    from vstain.models import build_model

    torch.manual_seed(seed)
    small = dict(init_filters=8, down_blocks=[1, 1], up_blocks=[1, 1], bottleneck_layers=1, growth_rate=4)
    networks = [
        build_model("lupi", **(small if tiny else {})),
        build_model("tiramisu", **(small if tiny else {})),
        build_model("tiramisu", **(small if tiny else {})),
    ]
    return StainNetworks(networks).eval()


def inference_variants(device: torch.device, *, cpu_compile: bool = False) -> list[Variant]:
    """Reference first, then the fast modes and the settings this device supports.

    Parameters
    ----------
    device
        Where the fields run.
    cpu_compile
        On a CPU, add the ``torch.compile`` variant (opt-in: its one-off warm-up takes minutes
        there and only pays off over many fields).
    """
    variants = [
        Variant("reference (512/256 pyramid, fp32)", "reference"),
        Variant("tiles 1024/128 fp32", "tiles"),
        Variant("whole fp32", "whole"),
        Variant("whole fp32 channels_last", "whole", channels_last=True),
    ]
    if bf16_supported(device):
        variants.append(Variant("whole bf16 channels_last", "whole", "bf16", channels_last=True))
    if device.type == "cuda":
        variants.append(Variant("whole bf16 channels_last compile", "whole", "bf16", channels_last=True, compile=True))
    elif cpu_compile and (shutil.which("g++") or shutil.which("c++")):  # inductor's CPU backend needs a C++ compiler
        variants.append(Variant("whole fp32 channels_last compile", "whole", channels_last=True, compile=True))
    return variants


def bench_inference(
    network: StainNetworks,
    *,
    device: torch.device,
    sizes: BenchSizes,
    variants: list[Variant],
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Seconds per field (all stains) and peak memory of each variant on each field size.

    Parameters
    ----------
    network
        The three stains' networks (:func:`stain_networks`).
    device
        Where they run.
    sizes
        Field sizes, tile batches and timed repeats (the fastest repeat is reported).
    variants
        Configurations to time (:func:`inference_variants`); the ``reference`` one first.
    log
        Receives one line per row.

    Returns
    -------
    list of dict
        One row per field and variant: ``field``, ``variant``, ``mode``, ``precision``,
        ``channels_last``, ``compile``, ``batch``, ``tiles``, ``seconds_per_field``,
        ``warmup_seconds``, ``speedup_vs_reference``, ``peak_memory_gib``, ``error``.
    """
    rows: list[dict[str, Any]] = []
    generator = torch.Generator().manual_seed(0)
    for height, width in sizes.fields:
        field = torch.rand(7, height, width, generator=generator)
        baseline: float | None = None
        whole_grid = Tiler("whole").grid(height, width)
        for variant in variants:
            if variant.mode == "tiles" and Tiler("tiles").grid(height, width) == whole_grid:
                log(f"  inference {height}x{width}: {variant.label} is a single whole-field tile here; skipped")
                continue
            batch = sizes.reference_batch if variant.mode == "reference" else sizes.tile_batch
            engine = FieldEngine(
                network, device=device, tiler=Tiler(variant.mode), precision=variant.precision,
                channels_last=variant.channels_last, compile=variant.compile, batch_size=batch,
            )
            try:
                warm_start = time.perf_counter()
                if variant.compile or device.type == "cuda":
                    engine(field)  # compiled graphs and cuDNN plans are per shape: warm up on the field
                else:
                    with torch.inference_mode(), engine._autocast():  # thread pools, kernel choice
                        engine.network(torch.rand(1, 7, 32, 32, device=device))
                synchronize(device)
                warmup = time.perf_counter() - warm_start
                clean(device)
                times = []
                with PeakMemory(device) as memory:
                    for _ in range(sizes.repeats):
                        start = time.perf_counter()
                        engine(field)
                        synchronize(device)
                        times.append(time.perf_counter() - start)
                seconds = min(times)
                error = None
            except Exception as exc:  # a variant the device cannot run is reported, not fatal
                seconds, error, memory = float("nan"), f"{exc.__class__.__name__}: {str(exc)[:200]}", PeakMemory(device)
                warmup = float("nan")
            finally:
                network.to(memory_format=torch.contiguous_format)
                network.channels_last = False
            if variant.mode == "reference" and error is None:
                baseline = seconds
            row = {
                "field": f"{height}x{width}",
                "variant": variant.label,
                "mode": variant.mode,
                "precision": variant.precision,
                "channels_last": variant.channels_last,
                "compile": variant.compile,
                "batch": batch,
                "tiles": len(Tiler(variant.mode).grid(height, width)),
                "seconds_per_field": seconds,
                "warmup_seconds": warmup,  # includes torch.compile's one-off compilation
                "speedup_vs_reference": (baseline / seconds) if baseline and seconds == seconds else None,
                "peak_memory_gib": gib(memory.peak_bytes),
                "error": error,
            }
            rows.append(row)
            log(f"  inference {row['field']:>10}  {variant.label:<40} {seconds:8.3f} s/field (warm-up {warmup:.0f} s)"
                + (f"  x{row['speedup_vs_reference']:.2f}" if row["speedup_vs_reference"] else "")
                + (f"  [{error}]" if error else ""))
            clean(device)
    return rows
