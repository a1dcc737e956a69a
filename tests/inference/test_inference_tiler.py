"""Tiler geometry, blending weights and exactness of the blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vstain.inference.tiler import DEFAULT_MARGIN, Tiler, pyramid_weights, ramp_weights, reflect_margin, reflect_pad


def test_pyramid_weights_match_the_reference_values():
    weights = pyramid_weights(512, 512)
    assert weights.dtype == np.float32
    assert weights[0, 0] == pytest.approx(0.0063, abs=5e-5)
    assert weights[256, 256] == pytest.approx(3.197, abs=5e-4)
    assert weights.mean() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(weights, weights[::-1, ::-1])
    np.testing.assert_array_equal(weights, weights.T)


def test_pyramid_weights_3x3_by_hand():
    # centre: Dc = 0 -> ratio 1; corner: Dc = sqrt(2), De = sqrt(.5) -> 1/3;
    # edge middle: Dc = 1, De = sqrt(.5) -> sqrt(.5) / (1 + sqrt(.5)).
    edge = np.sqrt(0.5) / (1 + np.sqrt(0.5))
    ratio = np.array([[1 / 3, edge, 1 / 3], [edge, 1.0, edge], [1 / 3, edge, 1 / 3]])
    expected = ratio * 9 / ratio.sum()
    np.testing.assert_allclose(pyramid_weights(3, 3), expected, rtol=1e-6)


def test_ramp_weights_flat_inside_and_positive():
    weights = ramp_weights(64, 48, ramp_rows=16, ramp_cols=0)
    assert (weights > 0).all()
    np.testing.assert_array_equal(weights[16:48], 1.0)
    # raised cosine: a rise and the mirrored fall sum to 1 over an overlap of exactly the ramp
    np.testing.assert_allclose(weights[:16, 0] + weights[15::-1, 0], 1.0, atol=1e-6)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 47])
    assert weights[0, 0] < weights[8, 0] < weights[15, 0] < 1


def test_reference_grid_like_the_reference_without_the_extra_tile():
    tiler = Tiler("reference")
    full = tiler.grid(2154, 2554)
    assert len(full) == 81 and full.padded_shape == (2560, 2560) and full.tile_shape == (512, 512)
    divisible = tiler.grid(1024, 1024)  # the reference padded this to 1536 (25 tiles)
    assert len(divisible) == 9 and divisible.padded_shape == (1024, 1024)
    small = tiler.grid(256, 256)
    assert len(small) == 1 and small.padded_shape == (512, 512)


def test_tiles_grid_covers_every_pixel_with_the_overlap():
    grid = Tiler("tiles", tile_size=1024, overlap=128, margin=0).grid(2154, 2554)
    cover = np.zeros((2154, 2554), dtype=int)
    for y, x in grid.origins:
        assert 0 <= y <= 2154 - 1024 and 0 <= x <= 2554 - 1024
        cover[y : y + 1024, x : x + 1024] += 1
    assert cover.min() >= 1
    rows = sorted({y for y, _ in grid.origins})
    assert all(b - a <= 1024 - 128 for a, b in zip(rows, rows[1:]))
    assert len(grid) == 9 and grid.padded_shape == (2154, 2554)


def test_whole_grid_pads_to_a_multiple_of_16():
    grid = Tiler("whole", margin=0).grid(2154, 2554)
    assert grid.padded_shape == (2160, 2560) and len(grid) == 1


def test_grids_with_the_margin():
    # 2154 + 2 x 64 = 2282 -> 2288, 2554 + 128 = 2682 -> 2688
    assert Tiler("whole").grid(2154, 2554).padded_shape == (2288, 2688)
    # a field that fits one tile stays one pass with its margins (1152² here), not four tiles
    small = Tiler("tiles").grid(1024, 1024)
    assert len(small) == 1 and small.padded_shape == (1152, 1152)
    full = Tiler("tiles").grid(2154, 2554)  # 2282 x 2682 in tiles of 1024 overlapping by 128: 3 x 3
    assert len(full) == 9 and full.padded_shape == (2282, 2682)
    # the reference mode keeps the reference's scheme unless told
    assert Tiler("reference").margin == 0 and len(Tiler("reference").grid(2154, 2554)) == 81
    assert Tiler("reference", margin=64).grid(2154, 2554).padded_shape == (2560, 3072)


def test_reflect_pad_matches_numpy_for_pads_larger_than_the_side():
    rng = np.random.default_rng(0)
    image = rng.random((2, 5, 7)).astype(np.float32)
    for bottom, right in [(0, 0), (3, 2), (11, 20), (4, 0)]:
        got = reflect_pad(torch.from_numpy(image), bottom, right).numpy()
        want = np.pad(image, ((0, 0), (0, bottom), (0, right)), mode="reflect")
        np.testing.assert_array_equal(got, want)
    one_row = torch.ones(1, 1, 6)
    assert reflect_pad(one_row, 3, 2).shape == (1, 4, 8)


@pytest.mark.parametrize(
    "tiler",
    [Tiler("reference"), Tiler("reference", tile_size=64, overlap=32), Tiler("tiles", tile_size=64, overlap=16),
     Tiler("tiles"), Tiler("whole"), Tiler("whole", margin=0), Tiler("tiles", tile_size=64, overlap=16, margin=0),
     Tiler("whole", margin=300)],
    ids=repr,
)
@pytest.mark.parametrize("shape", [(256, 256), (67, 131), (150, 97)])
def test_a_pointwise_linear_model_is_reproduced_exactly(tiler, shape):
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((7, *shape), dtype=np.float32))
    weights = torch.from_numpy(rng.normal(size=(2, 7)).astype(np.float32))

    def linear(batch):
        return torch.einsum("kc,bchw->bkhw", weights, batch) + 0.5

    out = tiler(image, linear, batch_size=3)
    assert out.shape == (2, *shape) and out.dtype == torch.float32
    torch.testing.assert_close(out, linear(image[None])[0], atol=2e-5, rtol=1e-5)


def test_modes_differ_from_reference_only_by_blending(tiny_tiramisu):
    rng = np.random.default_rng(2)
    image = torch.from_numpy(rng.random((7, 192, 224), dtype=np.float32))
    network = lambda batch: tiny_tiramisu(batch)  # noqa: E731
    with torch.inference_mode():
        # margin 0: the reference tiling's own bottom/right padding is what is compared
        reference = Tiler("reference", tile_size=128, overlap=64, margin=0)(image, network, batch_size=8)
        whole = Tiler("whole", margin=0)(image, network)
        tiles = Tiler("tiles", tile_size=128, overlap=32, margin=0)(image, network, batch_size=8)
    assert reference.shape == whole.shape == tiles.shape == (1, 192, 224)
    # Same network, same pixels: only the tile borders (receptive field cut off) differ.
    assert 0 < (whole - reference).abs().mean() < 0.002  # measured 3e-4; the output std is 0.04
    assert (tiles - reference).abs().mean() < 0.002
    interior = (slice(None), slice(40, 60), slice(40, 60))  # centre of a reference tile, far from any tile edge
    assert (whole - reference)[interior].abs().max() < 1e-5


def _box_filter(batch: torch.Tensor) -> torch.Tensor:
    """3x3 mean of the first channel with zero padding: what a network sees beyond the edge is 0."""
    kernel = torch.full((1, 1, 3, 3), 1 / 9)
    return torch.nn.functional.conv2d(batch[:, :1], kernel, padding=1)


@pytest.mark.parametrize("mode", ["whole", "tiles", "reference"])
def test_the_margin_gives_the_network_context_beyond_the_edges(mode):
    image = torch.full((7, 40, 56), 2.0)
    options = {} if mode == "whole" else {"tile_size": 32, "overlap": 16}
    bare = Tiler(mode, margin=0, **options)(image, _box_filter)
    # by hand: a corner sees 4 of its 9 neighbours inside the field, an edge pixel 6
    assert bare[0, 0, 0].item() == pytest.approx(2 * 4 / 9) and bare[0, 0, 20].item() == pytest.approx(2 * 6 / 9)
    assert bare[0, 20, 20].item() == pytest.approx(2.0)
    for margin in (1, DEFAULT_MARGIN):
        out = Tiler(mode, margin=margin, **options)(image, _box_filter)
        assert out.shape == (1, 40, 56)
        if mode == "whole":
            torch.testing.assert_close(out, torch.full((1, 40, 56), 2.0))
        elif margin == 1:  # tiles still see zeros at their own seams; the field's corners lie in one tile only
            corners = out[0, [0, 0, -1, -1], [0, -1, 0, -1]]
            torch.testing.assert_close(corners, torch.full((4,), 2.0))


def test_reflect_margin_matches_numpy_on_all_sides_for_any_margin():
    rng = np.random.default_rng(3)
    image = rng.random((2, 5, 7)).astype(np.float32)
    for margin in (0, 1, 4, 13):
        got = reflect_margin(torch.from_numpy(image), margin).numpy()
        np.testing.assert_array_equal(got, np.pad(image, ((0, 0), (margin, margin), (margin, margin)), mode="reflect"))


def test_the_margin_is_recorded_kept_by_smaller_tilers_and_checked():
    assert Tiler("whole").describe() == {"mode": "whole", "multiple": 16, "margin": DEFAULT_MARGIN}
    # no margin: the description outputs made before the option carry, so they still match on resume
    assert Tiler("whole", margin=0).describe() == {"mode": "whole", "multiple": 16}
    assert Tiler("whole", margin=8).smaller().margin == 8
    assert Tiler("tiles", margin=8).smaller().margin == 8
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="margin"):
            Tiler("whole", margin=bad)
