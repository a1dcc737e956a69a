"""``vstain bench``: inference seconds per field and training throughput, reference vs fast.

Random-weight networks at the reference configurations (LUPI-32 for nuclei, two Tiramisu-48 for
lipids and cytoplasm, PatchGAN for the GAN step) - weights do not change the arithmetic, so the
timings hold for trained models. Everything runs in one process on one device, so the rows are
directly comparable.

Inference: the three stains of one field in ``reference`` mode (512² tiles, stride 256, pyramid
blending, fp32, tile batch 16) against the fast modes (``tiles``, ``whole``) and the fast
settings the device supports (bf16 autocast, channels-last, ``torch.compile`` on CUDA).

Training: a GAN step (generator + discriminator forward/backward, raLSGAN + gradient + MAE/median
losses, both optimisers) and a nuclei LUPI step (LWM + BCE + MAE/median), fp32 eager (the
reference) against bf16 autocast + channels-last (+ compile on CUDA).

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident set
(``VmHWM``, reset between measurements through ``/proc/self/clear_refs``), i.e. everything the
process holds, libraries included.

Imports are limited to torch, numpy and vstain.models / vstain.losses / vstain.inference so the
bench runs on a GPU box with only ``PYTHONPATH=src``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from vstain.inference.engine import FieldEngine, StainNetworks
from vstain.inference.tiler import Tiler

__all__ = ["BenchSizes", "run_benchmark", "format_table", "Variant"]


@dataclass(frozen=True)
class BenchSizes:
    """Problem sizes of one benchmark run."""

    fields: tuple[tuple[int, int], ...]
    reference_batch: int
    tile_batch: int
    gan_batch: int
    lupi_batch: int
    crop: int
    train_steps: int
    repeats: int

    @classmethod
    def full(cls) -> "BenchSizes":
        """The issue's sizes: a 20x field, batch 4 GAN / batch 6 LUPI at 512²."""
        return cls(fields=((2154, 2554),), reference_batch=16, tile_batch=4, gan_batch=4, lupi_batch=6,
                   crop=512, train_steps=5, repeats=3)

    @classmethod
    def quick(cls) -> "BenchSizes":
        """Minutes on a small CPU: one 1024² field; training at batch 2 on 128² crops."""
        return cls(fields=((1024, 1024),), reference_batch=2, tile_batch=2, gan_batch=2,
                   lupi_batch=2, crop=128, train_steps=2, repeats=1)


@dataclass(frozen=True)
class Variant:
    """One inference configuration."""

    label: str
    mode: str
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False


# ---------------------------------------------------------------------------- measurement helpers
class _PeakMemory:
    """Peak memory over a block: CUDA allocator peak, or the process's peak RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes: int | None = None

    def __enter__(self) -> "_PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # "5" resets VmHWM (Linux >= 4.0), so each block gets its own peak
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak_bytes = _peak_rss_bytes()


def _peak_rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**30, 3)


def _bf16_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # CPU bf16 is emulated (slower than fp32) without AVX512-BF16 / AMX; only measure it where native.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _clean(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- inference
def stain_networks(*, tiny: bool = False, seed: int = 0) -> StainNetworks:
    """Nuclei (LUPI-32) + lipids + cytoplasm (Tiramisu-48), random weights, eval mode.

    ``tiny`` shrinks them (8 filters, 1-1 blocks) for tests of the bench itself.
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

    On a CPU the ``torch.compile`` variant is opt-in (``cpu_compile``): its one-off warm-up takes
    minutes there and only pays off over many fields.
    """
    variants = [
        Variant("reference (512/256 pyramid, fp32)", "reference"),
        Variant("tiles 1024/128 fp32", "tiles"),
        Variant("whole fp32", "whole"),
        Variant("whole fp32 channels_last", "whole", channels_last=True),
    ]
    if _bf16_ok(device):
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
    """Seconds per field (all stains) and peak memory of each variant on each field size."""
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
                _sync(device)
                warmup = time.perf_counter() - warm_start
                _clean(device)
                times = []
                with _PeakMemory(device) as memory:
                    for _ in range(sizes.repeats):
                        start = time.perf_counter()
                        engine(field)
                        _sync(device)
                        times.append(time.perf_counter() - start)
                seconds = min(times)
                error = None
            except Exception as exc:  # a variant the device cannot run is reported, not fatal
                seconds, error, memory = float("nan"), f"{exc.__class__.__name__}: {str(exc)[:200]}", _PeakMemory(device)
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
                "peak_memory_gib": _gib(memory.peak_bytes),
                "error": error,
            }
            rows.append(row)
            log(f"  inference {row['field']:>10}  {variant.label:<40} {seconds:8.3f} s/field (warm-up {warmup:.0f} s)"
                + (f"  x{row['speedup_vs_reference']:.2f}" if row["speedup_vs_reference"] else "")
                + (f"  [{error}]" if error else ""))
            _clean(device)
    return rows


# ---------------------------------------------------------------------------- training
def _gan_step_factory(device: torch.device, sizes: BenchSizes, *, bf16: bool, channels_last: bool, compile: bool,
                      tiny: bool):
    from vstain.losses import build_loss
    from vstain.models import build_model

    torch.manual_seed(0)
    small = dict(init_filters=8, down_blocks=[1, 1], up_blocks=[1, 1], bottleneck_layers=1, growth_rate=4)
    generator = build_model("tiramisu", **(small if tiny else {})).to(device).train()
    discriminator = build_model("patchgan", **({"ndf": 8, "n_layers": 2} if tiny else {})).to(device).train()
    if channels_last:
        generator = generator.to(memory_format=torch.channels_last)
        discriminator = discriminator.to(memory_format=torch.channels_last)
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-4)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=1e-6)
    adv_g, adv_d = build_loss("ralsgan_g"), build_loss("ralsgan_d")
    gradient, median_mae = build_loss("gradient"), build_loss("median_mae")
    g_run = torch.compile(generator) if compile else generator
    d_run = torch.compile(discriminator) if compile else discriminator
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(sizes.gan_batch, 7, sizes.crop, sizes.crop, generator=gen).to(device)
    y = torch.rand(sizes.gan_batch, 1, sizes.crop, sizes.crop, generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            fake = g_run(x)
            d_real = d_run(torch.cat([x, y], 1))
            d_fake = d_run(torch.cat([x, fake.detach()], 1))
            d_loss = adv_d(d_real.float(), d_fake.float())
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        with autocast:
            d_real = d_run(torch.cat([x, y], 1)).detach()
            d_fake = d_run(torch.cat([x, fake], 1))
            fake32 = fake.float()
            g_loss = 0.01 * adv_g(d_real.float(), d_fake.float()) + 10 * gradient(fake32, y) + median_mae(fake32, y)
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()

    return step, sizes.gan_batch


def _lupi_step_factory(device: torch.device, sizes: BenchSizes, *, bf16: bool, channels_last: bool, compile: bool,
                       tiny: bool):
    from vstain.losses import build_loss
    from vstain.models import build_model

    torch.manual_seed(0)
    small = dict(init_filters=8, down_blocks=[1, 1], up_blocks=[1, 1], bottleneck_layers=1, growth_rate=4)
    model = build_model("lupi", **(small if tiny else {})).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss = build_loss("lupi")
    run = torch.compile(model) if compile else model
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(sizes.lupi_batch, 7, sizes.crop, sizes.crop, generator=gen).to(device)
    y = torch.rand(sizes.lupi_batch, 1, sizes.crop, sizes.crop, generator=gen).to(device)
    mask = (torch.rand(sizes.lupi_batch, sizes.crop, sizes.crop, generator=gen) > 0.7).float().to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            seg, image, sides = run(x)
            total, _ = loss(seg.float(), image.float(), [s.float() for s in sides], y, mask)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        optimiser.step()

    return step, sizes.lupi_batch


def bench_training(
    *, device: torch.device, sizes: BenchSizes, tiny: bool = False, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Images/s and peak memory of a GAN step and a LUPI step, fp32 eager vs fast settings."""
    settings = [("fp32 eager (reference)", False, False, False)]
    if _bf16_ok(device):
        cuda = device.type == "cuda"
        settings.append(("bf16 + channels_last" + (" + compile" if cuda else ""), True, True, cuda))
    else:
        settings.append(("fp32 + channels_last (no native bf16 here)", False, True, False))
    rows: list[dict[str, Any]] = []
    for recipe, factory in (("gan (G + D)", _gan_step_factory), ("nuclei lupi", _lupi_step_factory)):
        baseline = None
        for label, bf16, channels_last, compile in settings:
            _clean(device)
            try:
                step, batch = factory(device, sizes, bf16=bf16, channels_last=channels_last, compile=compile,
                                      tiny=tiny)
                step()  # warm-up (and compilation)
                _sync(device)
                with _PeakMemory(device) as memory:
                    start = time.perf_counter()
                    for _ in range(sizes.train_steps):
                        step()
                    _sync(device)
                    seconds = (time.perf_counter() - start) / sizes.train_steps
                throughput, error = batch / seconds, None
            except Exception as exc:
                throughput, error, memory, batch = float("nan"), f"{exc.__class__.__name__}: {str(exc)[:200]}", _PeakMemory(device), 0
            if baseline is None and error is None:
                baseline = throughput
            row = {
                "recipe": recipe,
                "settings": label,
                "batch": batch,
                "crop": sizes.crop,
                "images_per_s": throughput,
                "speedup_vs_reference": throughput / baseline if baseline and throughput == throughput else None,
                "peak_memory_gib": _gib(memory.peak_bytes),
                "error": error,
            }
            rows.append(row)
            log(f"  training  {recipe:<12} {label:<48} {throughput:8.2f} img/s  peak {row['peak_memory_gib']} GiB"
                + (f"  [{error}]" if error else ""))
    return rows


# ---------------------------------------------------------------------------- evaluation
def bench_evaluation(
    field: tuple[int, int], *, magnification: str = "20x", log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Time ``measure_field`` on one ``vstain synth`` field: one thread, then the default threads.

    Rows hold ``field``, ``threads``, ``seconds`` (wall), ``cpu_seconds`` and the object counts.
    """
    from vstain.evaluation.pipeline import default_threads
    from vstain.evaluation.table import benchmark_measure_field, synthetic_field

    images = synthetic_field(tuple(field), magnification=magnification, seed=0)
    rows = []
    for threads in sorted({1, default_threads()}):
        timing = benchmark_measure_field(magnification=magnification, field=images, threads=threads)
        rows.append({
            "field": f"{field[0]}x{field[1]}",
            "magnification": magnification,
            "threads": threads,
            "seconds": timing["seconds"][0],
            "cpu_seconds": timing["cpu_seconds"][0],
            "objects": timing["objects"],
        })
        log(f"  evaluation {rows[-1]['field']} {magnification} threads={threads}: "
            f"{rows[-1]['seconds']:.1f} s wall, {rows[-1]['cpu_seconds']:.1f} s CPU")
    return rows


# ---------------------------------------------------------------------------- driver
def run_benchmark(
    *,
    quick: bool = False,
    device: str = "cpu",
    sizes: BenchSizes | None = None,
    training: bool = True,
    tiny: bool = False,
    field: tuple[int, int] | None = None,
    cpu_compile: bool = False,
    evaluation: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the inference, training and evaluation benchmarks; returns a JSON-ready dict.

    Parameters
    ----------
    quick
        Small sizes (:meth:`BenchSizes.quick`) instead of the issue's full sizes.
    device
        ``"cpu"`` or ``"cuda"``.
    sizes
        Explicit sizes (overrides ``quick``).
    training
        Also time the training steps.
    tiny
        Tiny networks (tests of the bench itself; the numbers mean nothing).
    field
        Inference field ``(H, W)`` replacing the sizes' fields (e.g. a small one for a smoke run).
    cpu_compile
        Also time ``torch.compile`` on a CPU (minutes of warm-up).
    evaluation
        Also time the CellProfiler-equivalent measurements of one synthetic 20x field of the
        first field size (:func:`bench_evaluation`).
    """
    target = torch.device(device)
    sizes = sizes or (BenchSizes.quick() if quick else BenchSizes.full())
    if field is not None:
        sizes = dataclasses.replace(sizes, fields=(tuple(field),))
    log(f"vstain bench on {_describe_device(target)}: fields {sizes.fields}, crops {sizes.crop}²")
    started = time.perf_counter()
    network = stain_networks(tiny=tiny)
    result: dict[str, Any] = {
        "device": _describe_device(target),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "quick": quick,
        "sizes": {k: v for k, v in sizes.__dict__.items()},
        "networks": {"nuclei": "lupi", "lipids": "tiramisu", "cytoplasm": "tiramisu",
                     "parameters": sum(p.numel() for p in network.parameters())},
        "inference": bench_inference(network, device=target, sizes=sizes,
                                     variants=inference_variants(target, cpu_compile=cpu_compile), log=log),
    }
    if training:
        result["training"] = bench_training(device=target, sizes=sizes, tiny=tiny, log=log)
    if evaluation:
        result["evaluation"] = bench_evaluation(sizes.fields[0], log=log)
    result["total_seconds"] = time.perf_counter() - started
    return result


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def format_table(result: dict[str, Any]) -> str:
    """The result as two plain-text tables."""
    lines = [f"device: {result['device']}  torch {result['torch']}", "",
             f"{'field':>10}  {'variant':<40} {'tiles':>5} {'s/field':>9} {'speedup':>8} {'peak GiB':>9}"]
    for row in result["inference"]:
        speed = f"x{row['speedup_vs_reference']:.2f}" if row["speedup_vs_reference"] else "-"
        lines.append(f"{row['field']:>10}  {row['variant']:<40} {row['tiles']:>5} {row['seconds_per_field']:>9.3f} "
                     f"{speed:>8} {row['peak_memory_gib']!s:>9}")
    if result.get("training"):
        lines += ["", f"{'recipe':<12} {'settings':<48} {'batch':>5} {'crop':>5} {'img/s':>8} {'speedup':>8} {'peak GiB':>9}"]
        for row in result["training"]:
            speed = f"x{row['speedup_vs_reference']:.2f}" if row["speedup_vs_reference"] else "-"
            lines.append(f"{row['recipe']:<12} {row['settings']:<48} {row['batch']:>5} {row['crop']:>5} "
                         f"{row['images_per_s']:>8.2f} {speed:>8} {row['peak_memory_gib']!s:>9}")
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
