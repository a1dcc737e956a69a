"""``vstain bench``: run the chosen benchmark sections, as tables and as JSON.

The sections are named in :data:`SECTIONS` (``inference``, ``training``, ``evaluation``); each
takes the same :class:`BenchContext` and returns its rows, so adding a section (e.g. a quality
benchmark) is one function and one entry. Importing this module does not import torch, so
``vstain --help`` can list the sections cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from vstain.bench.sizes import BenchSizes

if TYPE_CHECKING:
    import torch

__all__ = ["BenchContext", "SECTIONS", "format_table", "run_benchmark", "save_result"]


@dataclass(frozen=True)
class BenchContext:
    """What every section gets: where to run, at what size, and how to report."""

    device: "torch.device"
    sizes: BenchSizes
    tiny: bool = False
    cpu_compile: bool = False
    log: Callable[[str], None] = print


def _inference(context: BenchContext) -> list[dict[str, Any]]:
    from vstain.bench.inference import bench_inference, inference_variants, stain_networks

    network = stain_networks(tiny=context.tiny)
    return bench_inference(network, device=context.device, sizes=context.sizes,
                           variants=inference_variants(context.device, cpu_compile=context.cpu_compile),
                           log=context.log)


def _training(context: BenchContext) -> list[dict[str, Any]]:
    from vstain.bench.training import bench_training

    return bench_training(device=context.device, sizes=context.sizes, tiny=context.tiny,
                          cpu_compile=context.cpu_compile, log=context.log)


def _evaluation(context: BenchContext) -> list[dict[str, Any]]:
    from vstain.bench.evaluation import bench_evaluation

    return bench_evaluation(context.sizes.fields[0], log=context.log)


#: Section name -> function of the context returning its rows (run in this order).
SECTIONS: dict[str, Callable[[BenchContext], list[dict[str, Any]]]] = {
    "inference": _inference,
    "training": _training,
    "evaluation": _evaluation,
}


def run_benchmark(
    sections: Sequence[str] = tuple(SECTIONS),
    *,
    quick: bool = False,
    device: str = "cpu",
    sizes: BenchSizes | None = None,
    tiny: bool = False,
    field: tuple[int, int] | None = None,
    cpu_compile: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run benchmark sections; returns a JSON-ready dict with one list of rows per section.

    Parameters
    ----------
    sections
        Names from :data:`SECTIONS`, run in that table's order (default: all).
    quick
        Small sizes (:meth:`BenchSizes.quick`) instead of the full ones.
    device
        ``"cpu"`` or ``"cuda[:N]"``.
    sizes
        Explicit sizes (overrides ``quick``).
    tiny
        Tiny networks (tests of the bench itself; the numbers mean nothing).
    field
        Field ``(H, W)`` replacing the sizes' fields (inference and evaluation).
    cpu_compile
        Also time ``torch.compile`` on a CPU (minutes of warm-up; always timed on CUDA).
    log
        Receives progress lines.

    Returns
    -------
    dict
        ``device``, ``torch``, ``python``, ``threads``, ``quick``, ``sizes``, ``sections``, one
        key per section with its rows, and ``total_seconds``.
    """
    import torch

    from vstain.bench.measure import describe_device

    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown benchmark section {unknown[0]!r}; expected some of {', '.join(SECTIONS)}")
    target = torch.device(device)
    sizes = sizes or (BenchSizes.quick() if quick else BenchSizes.full())
    if field is not None:
        sizes = dataclasses.replace(sizes, fields=(tuple(field),))
    chosen = [name for name in SECTIONS if name in sections]
    log(f"vstain bench {' '.join(chosen)} on {describe_device(target)}: fields {sizes.fields}, crops {sizes.crop}²")
    started = time.perf_counter()
    context = BenchContext(device=target, sizes=sizes, tiny=tiny, cpu_compile=cpu_compile, log=log)
    result: dict[str, Any] = {
        "device": describe_device(target),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "quick": quick,
        "sizes": dataclasses.asdict(sizes),
        "sections": chosen,
    }
    for name in chosen:
        result[name] = SECTIONS[name](context)
    result["total_seconds"] = time.perf_counter() - started
    return result


def format_table(result: dict[str, Any]) -> str:
    """The result as plain-text tables, one per section present."""
    lines = [f"device: {result['device']}  torch {result['torch']}"]
    if result.get("inference"):
        lines += ["", f"{'field':>10}  {'variant':<40} {'tiles':>5} {'s/field':>9} {'speedup':>8} {'peak GiB':>9}"]
        for row in result["inference"]:
            speed = f"x{row['speedup_vs_reference']:.2f}" if row["speedup_vs_reference"] else "-"
            lines.append(f"{row['field']:>10}  {row['variant']:<40} {row['tiles']:>5} {row['seconds_per_field']:>9.3f} "
                         f"{speed:>8} {row['peak_memory_gib']!s:>9}")
    if result.get("training"):
        lines += ["", f"{'recipe':<22} {'settings':<48} {'batch':>5} {'crop':>5} {'img/s':>8} {'speedup':>8} "
                  f"{'CPU s/step':>10} {'peak GiB':>9}"]
        for row in result["training"]:
            speed = f"x{row['speedup_vs_reference']:.2f}" if row["speedup_vs_reference"] else "-"
            cpu = row.get("cpu_seconds_per_step", float("nan"))
            lines.append(f"{row['recipe']:<22} {row['settings']:<48} {row['batch']:>5} {row['crop']:>5} "
                         f"{row['images_per_s']:>8.2f} {speed:>8} {cpu:>10.2f} "
                         f"{row['peak_memory_gib']!s:>9}"
                         + (f"  [{row['error']}]" if row.get("error") else ""))
    if result.get("evaluation"):
        lines += ["", f"{'evaluation':<12} {'field':>10} {'threads':>7} {'s wall':>8} {'s CPU':>8}  objects"]
        for row in result["evaluation"]:
            counts = ", ".join(f"{k} {v}" for k, v in row["objects"].items())
            lines.append(f"{'measure_field':<12} {row['field']:>10} {row['threads']:>7} {row['seconds']:>8.2f} "
                         f"{row['cpu_seconds']:>8.2f}  {counts}")
    return "\n".join(lines)


def save_result(result: dict[str, Any], path: str | Path) -> Path:
    """Write the benchmark JSON atomically."""
    from vstain.atomic import write_text_atomic

    return write_text_atomic(path, json.dumps(result, indent=2, default=str) + "\n")
