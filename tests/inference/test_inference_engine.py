"""FieldEngine: dihedral TTA, multi-network outputs, out-of-memory fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vstain.errors import VstainError
from vstain.inference.engine import FieldEngine, StainNetworks, dihedral, is_out_of_memory, undo_dihedral
from vstain.inference.tiler import Tiler


def _field(shape=(7, 48, 64), seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


def test_dihedral_transforms_are_distinct_and_inverted():
    x = torch.arange(12.0).reshape(1, 3, 4)
    outs = [dihedral(x, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) + tuple(o.shape) for o in outs}) == 8
    for k, out in enumerate(outs):
        torch.testing.assert_close(undo_dihedral(out, k), x)


def test_tta_of_an_equivariant_model_is_exact():
    torch.manual_seed(0)
    pointwise = nn.Conv2d(7, 2, kernel_size=1)  # commutes with every flip and rotation
    image = _field()
    plain, _ = FieldEngine(StainNetworks([pointwise]), tiler=Tiler("whole"))(image)
    mean, std = FieldEngine(StainNetworks([pointwise]), tiler=Tiler("whole"), tta=8)(image, spread=True)
    torch.testing.assert_close(mean, plain, atol=1e-6, rtol=1e-6)
    assert std is not None and std.max() < 1e-5


def test_tta_of_an_invariant_input_is_exact(tiny_tiramisu):
    # A field symmetric under the whole dihedral group: all eight passes see the same input.
    quarter = _field((7, 24, 24))
    half = torch.cat([quarter, quarter.flip(-1)], dim=-1)
    square = torch.cat([half, half.flip(-2)], dim=-2)
    symmetric = (square + square.transpose(-1, -2)) / 2
    for k in range(8):
        torch.testing.assert_close(dihedral(symmetric, k), symmetric)
    engine = FieldEngine(StainNetworks([tiny_tiramisu]), tiler=Tiler("whole"))
    engine.tta = 8
    mean, std = engine(symmetric, spread=True)
    # the average of the eight back-transformed outputs is D4-symmetric by construction
    for k in range(8):
        torch.testing.assert_close(dihedral(mean, k), mean, atol=1e-6, rtol=0)
    assert std is not None and std.max() > 0  # the network itself is not equivariant


def test_tta_mean_and_spread_equal_the_eight_passes(tiny_tiramisu):
    image = _field((7, 32, 48))
    # margin 0: the eight passes below see the bare field, as the engine must
    engine = FieldEngine(StainNetworks([tiny_tiramisu]), tiler=Tiler("whole", margin=0), tta=8)
    mean, std = engine(image, spread=True)
    with torch.inference_mode():
        passes = torch.stack([undo_dihedral(tiny_tiramisu(dihedral(image, k)[None])[0], k) for k in range(8)])
    torch.testing.assert_close(mean, passes.mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(std, passes.std(0, unbiased=False), atol=1e-6, rtol=1e-4)
    assert std.max() > 0


class _TupleNet(nn.Module):
    """Returns (logits, image) like the LUPI network in eval mode."""

    def forward(self, x):
        return x[:, :2] * 3, x[:, :1] * 2


def test_stain_networks_take_the_image_output_and_concatenate():
    x = _field((2, 7, 8, 8))
    net = StainNetworks([_TupleNet(), nn.Identity()], output_indices=[None, None])
    out = net(x)
    assert out.shape == (2, 8, 8, 8)
    torch.testing.assert_close(out[:, :1], x[:, :1] * 2)
    torch.testing.assert_close(out[:, 1:], x)
    first = StainNetworks([_TupleNet()], output_indices=[0])(x)
    torch.testing.assert_close(first, x[:, :2] * 3)


class _OutOfMemoryAbove(nn.Module):
    """Identity on the first channel that 'runs out of memory' on inputs above a pixel budget."""

    def __init__(self, budget: int, error=torch.OutOfMemoryError):
        super().__init__()
        self.budget = budget
        self.error = error
        self.sizes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape))
        if x.shape[0] * x.shape[-2] * x.shape[-1] > self.budget:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x[:, :1] * 1.0


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_out_of_memory_falls_back_to_smaller_tiles(error):
    image = _field((7, 600, 560))
    fake = _OutOfMemoryAbove(300 * 300, error)
    engine = FieldEngine(fake, tiler=Tiler("whole"), batch_size=2)
    out, _ = engine(image)
    torch.testing.assert_close(out, image[:1])
    assert engine.tiler.mode == "tiles" and engine.tiler.tile_size == 256
    assert engine.batch_size == 1
    assert engine.fallbacks == [
        "out of memory: batch size -> 1",
        "out of memory: falling back to Tiler('tiles', tile_size=1024, overlap=128)",
        "out of memory: falling back to Tiler('tiles', tile_size=512, overlap=64)",
        "out of memory: falling back to Tiler('tiles', tile_size=256, overlap=32)",
    ]
    fake.sizes.clear()
    engine(image)  # the lighter setting is kept: no failed attempts on the next field
    assert all(s[-2:] == (256, 256) for s in fake.sizes)


def test_out_of_memory_everywhere_is_a_clear_error():
    engine = FieldEngine(_OutOfMemoryAbove(0), tiler=Tiler("whole"), batch_size=1)
    with pytest.raises(VstainError, match="out of memory .* even with"):
        engine(_field((7, 300, 300)))


def test_other_errors_are_not_swallowed():
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    engine = FieldEngine(_OutOfMemoryAbove(0, error=lambda msg: ValueError("boom")), tiler=Tiler("whole"))
    with pytest.raises(ValueError, match="boom"):
        engine(_field((7, 32, 32)))


def test_bad_settings_are_refused():
    with pytest.raises(VstainError, match="precision"):
        FieldEngine(nn.Identity(), precision="fp8")
    with pytest.raises(VstainError, match="tta"):
        FieldEngine(nn.Identity(), tta=4)


def test_bf16_and_channels_last_stay_close_to_fp32(tiny_tiramisu):
    image = _field((7, 64, 64))
    fp32, _ = FieldEngine(StainNetworks([tiny_tiramisu]))(image)
    fast, _ = FieldEngine(StainNetworks([tiny_tiramisu]), precision="bf16", channels_last=True)(image)
    assert fast.dtype == torch.float32
    assert (fast - fp32).abs().max() < 0.02
