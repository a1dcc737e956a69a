"""Forward behaviour of the networks: shapes at any size, range, gradients, determinism, fusion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vstain.errors import ConfigError
from vstain.models import build_model
from vstain.models.layers import TransitionUp, pad_to_multiple

# Four poolings like the reference (so inputs are padded to multiples of 16), tiny widths for speed.
TINY = dict(init_filters=4, down_blocks=[1, 1, 1, 1], bottleneck_layers=1, up_blocks=[1, 1, 1, 1],
            growth_rate=2)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors on a shared 2-core box: one intra-op thread is ~10x faster than two."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _input(height: int, width: int, *, batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 7, height, width, generator=generator)


@pytest.mark.parametrize("downsample", [1, 2])  # 2: the 60x lipid recipe's averaged pixels
@pytest.mark.parametrize("size", [(250, 333), (64, 64), (5, 7)])
def test_tiramisu_any_size_output_in_unit_interval(size: tuple[int, int], downsample: int) -> None:
    torch.manual_seed(0)
    model = build_model("tiramisu", **TINY, downsample=downsample).eval()
    assert model.size_multiple == 16 * downsample
    with torch.no_grad():
        out = model(_input(*size))
    assert out.shape == (1, 1, *size)
    assert torch.all(out > 0) and torch.all(out < 1)


def test_reference_tiramisu_64() -> None:
    torch.manual_seed(0)
    model = build_model("tiramisu").eval()
    with torch.no_grad():
        out = model(_input(64, 64, batch=2))
    assert out.shape == (2, 1, 64, 64)
    assert torch.all(out > 0) and torch.all(out < 1)


def test_pad_to_multiple_pads_bottom_right_and_falls_back_to_replicate() -> None:
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    padded, size = pad_to_multiple(x, 4)
    assert size == (3, 4) and padded.shape == (1, 1, 4, 4)
    assert torch.equal(padded[..., :3, :], x)
    assert torch.equal(padded[0, 0, 3], x[0, 0, 1])  # reflect: row 3 mirrors row 1
    tiny, _ = pad_to_multiple(x, 16)
    assert torch.equal(tiny[0, 0, 15, :4], x[0, 0, 2])  # replicate where reflect is impossible
    assert torch.equal(tiny[0, 0, 0, 15], x[0, 0, 0, 3])


@pytest.mark.parametrize("size", [(250, 333), (64, 64)])
def test_lupi_contract_train_and_eval(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model("lupi", **TINY)
    x = _input(*size, batch=2)
    model.train()
    seg, image, sides = model(x)
    assert seg.shape == (2, 2, *size)
    assert image.shape == (2, 1, *size)
    assert torch.all(image > 0) and torch.all(image < 1)
    assert [tuple(s.shape) for s in sides] == [
        (2, 1, math.ceil(size[0] / k), math.ceil(size[1] / k)) for k in (8, 4, 2)
    ]
    model.eval()
    with torch.no_grad():
        result = model(x)
    assert len(result) == 2
    assert result[0].shape == (2, 2, *size) and result[1].shape == (2, 1, *size)


def test_reference_lupi_train_mode_side_outputs_at_natural_scale() -> None:
    torch.manual_seed(0)
    model = build_model("lupi").train()
    seg, image, sides = model(_input(64, 64, batch=2))
    assert seg.shape == (2, 2, 64, 64) and image.shape == (2, 1, 64, 64)
    assert [s.shape[-1] for s in sides] == [8, 16, 32]


@pytest.mark.parametrize("decoders", ["separate", "shared"])
@pytest.mark.parametrize("size", [(250, 333), (64, 64)])
def test_multi_output_shapes(decoders: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model("tiramisu_multi", decoders=decoders, **TINY).eval()
    with torch.no_grad():
        out = model(_input(*size))
    assert out.shape == (1, 3, *size)
    assert torch.all(out > 0) and torch.all(out < 1)


def test_patchgan_output_30x30_for_512_on_meta_device() -> None:
    model = build_model("patchgan").to("meta")  # shapes only: no arithmetic at 512²
    out = model(torch.empty(2, 8, 512, 512, device="meta"))
    assert tuple(out.shape) == (2, 1, 30, 30)


def test_patchgan_init_options() -> None:
    torch.manual_seed(0)
    normal = build_model("patchgan")
    reference = build_model("patchgan", init="default")
    big_normal = normal.model[8].weight  # Conv(128 -> 256), 524,288 weights
    big_default = reference.model[8].weight
    assert big_normal.shape == (256, 128, 4, 4)
    assert abs(big_normal.std().item() - 0.02) < 1e-3
    assert abs(big_normal.mean().item()) < 1e-3
    # PyTorch default: kaiming-uniform(a=sqrt 5) → U(±1/sqrt(fan_in)), std = 1/sqrt(3·2048)
    assert abs(big_default.std().item() - 1 / math.sqrt(3 * 2048)) < 5e-4
    bn = normal.model[9]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and torch.all(bn.bias == 0)


def _assert_every_parameter_gets_gradient(model: torch.nn.Module) -> None:
    # Every parameter is in the graph; every weight and every bias that does not feed only a
    # training-mode BatchNorm gets a nonzero gradient. A conv bias whose output reaches the loss
    # only through BatchNorm (a dense layer's, when all later layers normalise it) has a gradient
    # of exactly zero in exact arithmetic: BatchNorm subtracts any per-channel constant. Whether
    # rounding leaves it 0 or 1e-12 depends on the CPU's kernels (0 on an AVX2 machine).
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"not in the graph: {missing}"
    dead = [n for n, p in model.named_parameters()
            if not torch.any(p.grad != 0) and not (n.endswith("conv.bias") and ".layers." in n)]
    assert not dead, f"zero gradient for {dead}"


def test_gradients_reach_every_parameter_tiramisu_and_multi() -> None:
    for name in ("tiramisu", "tiramisu_multi"):
        torch.manual_seed(0)
        model = build_model(name, **TINY, dropout=0.0, transition_dropout=0.0).train()
        model(_input(32, 32, batch=2)).square().mean().backward()
        _assert_every_parameter_gets_gradient(model)


@pytest.mark.parametrize("fusion", ["sum", "multiply"])
def test_gradients_reach_every_parameter_lupi(fusion: str) -> None:
    torch.manual_seed(0)
    model = build_model("lupi", **TINY, dropout=0.0, transition_dropout=0.0, fusion=fusion).train()
    seg, image, sides = model(_input(32, 32, batch=2))
    loss = seg.square().mean() + image.square().mean() + sum(s.square().mean() for s in sides)
    loss.backward()
    _assert_every_parameter_gets_gradient(model)


def test_lupi_seg_skips_make_segmentation_see_fine_detail() -> None:
    # A one-pixel change of the input reaches the segmentation logits at that pixel only through
    # the full-resolution encoder skip: without skips the segmentation decoder starts from the
    # 1/16 bottleneck, and its answer to a point change is spread over a 16-pixel cell.
    torch.manual_seed(0)
    with_skips = build_model("lupi", **TINY, dropout=0.0, transition_dropout=0.0, seg_skips=True).eval()
    torch.manual_seed(0)
    without = build_model("lupi", **TINY, dropout=0.0, transition_dropout=0.0).eval()
    assert with_skips.seg_skips and not without.seg_skips
    assert len(list(with_skips.seg_decoder.parameters())) == len(list(without.seg_decoder.parameters()))
    x = _input(32, 32)
    poked = x.clone()
    poked[0, :, 9, 9] += 1.0
    with torch.no_grad():
        change_with = (with_skips(poked)[0] - with_skips(x)[0]).abs().sum(1)[0]
        change_without = (without(poked)[0] - without(x)[0]).abs().sum(1)[0]
    assert change_with[9, 9] > 0
    # with skips the change peaks at the poked pixel; without, the poked pixel is no special one
    assert change_with[9, 9] == change_with.max()
    assert change_without[9, 9] < change_without.max()
    seg, image, sides = with_skips.train()(_input(32, 32, batch=2))
    assert seg.shape == (2, 2, 32, 32) and image.shape == (2, 1, 32, 32)


@pytest.mark.parametrize("size", [(250, 333), (64, 64)])
def test_lupi_downsample_contract_and_side_scales(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model("lupi", **TINY, downsample=3).train()
    assert model.size_multiple == 48
    seg, image, sides = model(_input(*size, batch=2))
    assert seg.shape == (2, 2, *size) and image.shape == (2, 1, *size)
    assert torch.all(image > 0) and torch.all(image < 1)
    # sides at 1/8, 1/4, 1/2 of the working (3x averaged) size
    assert [tuple(s.shape) for s in sides] == [
        (2, 1, math.ceil(size[0] / k), math.ceil(size[1] / k)) for k in (24, 12, 6)
    ]


def test_lupi_downsample_sees_only_block_means() -> None:
    # The network works on 2x2 averages: moving intensity inside a 2x2 block changes nothing,
    # moving it across blocks does.
    torch.manual_seed(0)
    model = build_model("lupi", **TINY, dropout=0.0, transition_dropout=0.0, downsample=2).eval()
    x = _input(32, 32)
    inside = x.clone()
    inside[0, :, 4, 4] += 0.5
    inside[0, :, 5, 5] -= 0.5
    across = x.clone()
    across[0, :, 4, 4] += 0.5
    across[0, :, 6, 6] -= 0.5
    with torch.no_grad():
        base, same, moved = model(x), model(inside), model(across)
    assert torch.allclose(base[0], same[0], atol=1e-6) and torch.allclose(base[1], same[1], atol=1e-6)
    assert not torch.allclose(base[1], moved[1], atol=1e-6)


def test_lupi_working_scale_outputs_are_the_full_ones_before_upsampling() -> None:
    torch.manual_seed(0)
    model = build_model("lupi", **TINY, dropout=0.0, transition_dropout=0.0, downsample=2).eval()
    x = _input(64, 96)
    with torch.no_grad():
        seg, image = model(x)
        seg_w, image_w = model(x, full_size=False)
    assert seg_w.shape == (1, 2, 32, 48) and image_w.shape == (1, 1, 32, 48)
    up = dict(scale_factor=2.0, mode="bilinear", align_corners=False)
    torch.testing.assert_close(F.interpolate(image_w, **up), image)
    torch.testing.assert_close(F.interpolate(seg_w, **up), seg)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_lupi_downsample_must_be_a_whole_number(bad: object) -> None:
    with pytest.raises(ConfigError, match="model.args.downsample"):
        build_model("lupi", **TINY, downsample=bad)


def test_tiramisu_downsample_is_the_network_on_block_means_upsampled() -> None:
    # downsample=2 must equal the same weights at downsample=1 run on the 2x2 block means,
    # upsampled bilinearly; and moving intensity inside a 2x2 block changes nothing.
    torch.manual_seed(0)
    model = build_model("tiramisu", **TINY, dropout=0.0, transition_dropout=0.0, downsample=2).eval()
    plain = build_model("tiramisu", **TINY, dropout=0.0, transition_dropout=0.0).eval()
    plain.load_state_dict(model.state_dict())
    x = _input(64, 96)
    inside = x.clone()
    inside[0, :, 4, 4] += 0.5
    inside[0, :, 5, 5] -= 0.5
    with torch.no_grad():
        out, same = model(x), model(inside)
        expected = F.interpolate(plain(F.avg_pool2d(x, 2)), scale_factor=2.0, mode="bilinear",
                                 align_corners=False)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, same, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_tiramisu_downsample_must_be_a_whole_number(bad: object) -> None:
    with pytest.raises(ConfigError, match="model.args.downsample"):
        build_model("tiramisu", **TINY, downsample=bad)


def test_gradients_reach_every_parameter_patchgan() -> None:
    torch.manual_seed(0)
    model = build_model("patchgan", ndf=4, n_layers=2).train()
    model(torch.rand(2, 8, 32, 32)).square().mean().backward()
    _assert_every_parameter_gets_gradient(model)


@pytest.mark.parametrize("name", ["tiramisu", "lupi", "tiramisu_multi", "patchgan"])
def test_same_seed_same_weights_and_outputs(name: str) -> None:
    overrides = {} if name == "patchgan" else TINY
    size = 64 if name == "patchgan" else 32  # PatchGAN's 4 stride-2 convs need at least 64 px
    x = torch.rand(2, 8 if name == "patchgan" else 7, size, size, generator=torch.Generator().manual_seed(1))
    results = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(name, **overrides).train()
        out = model(x)  # train mode: dropout draws from the seeded global generator
        out = out[1] if name == "lupi" else out
        results.append((model.state_dict(), out.detach()))
    (state_a, out_a), (state_b, out_b) = results
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(out_a, out_b)
    torch.manual_seed(124)
    other = build_model(name, **overrides)
    assert not all(torch.equal(state_a[k], v) for k, v in other.state_dict().items())


@pytest.mark.parametrize("fusion", ["sum", "multiply"])
def test_lupi_fusion_feeds_guided_features_before_each_transition_up(fusion: str) -> None:
    torch.manual_seed(0)
    model = build_model("lupi", **TINY, fusion=fusion).eval()
    seen: dict[str, torch.Tensor] = {}

    def keep(key: str, *, output: bool):
        def hook(_module, args, result=None):
            seen[key] = (result if output else args[0]).detach().clone()
        return hook

    model.encoder.bottleneck.register_forward_hook(keep("bottleneck", output=True))
    for i in range(4):
        model.reg_decoder.transitions[i].register_forward_pre_hook(keep(f"reg_in{i}", output=False))
    for i in range(3):
        model.seg_decoder.blocks[i].register_forward_hook(keep(f"seg{i}", output=True))
        model.reg_decoder.blocks[i].register_forward_hook(keep(f"reg{i}", output=True))
    with torch.no_grad():
        model(_input(32, 32))
    combine = torch.add if fusion == "sum" else torch.mul
    # Step 0 fuses the bottleneck with itself (reference: 2·bottleneck for sum).
    torch.testing.assert_close(seen["reg_in0"], combine(seen["bottleneck"], seen["bottleneck"]))
    for i in range(1, 4):
        torch.testing.assert_close(seen[f"reg_in{i}"], combine(seen[f"reg{i - 1}"], seen[f"seg{i - 1}"]))


def test_icnr_subpixel_filters_identical_and_upsampling_nearest_at_init() -> None:
    torch.manual_seed(0)
    model = build_model("lupi")
    transitions = [m for m in model.modules() if isinstance(m, TransitionUp)]
    assert len(transitions) == 8
    for up in transitions:
        weight = up.conv.weight.view(-1, 4, *up.conv.weight.shape[1:])
        assert torch.equal(weight, weight[:, :1].expand_as(weight))
        bias = up.conv.bias.view(-1, 4)
        assert torch.equal(bias, bias[:, :1].expand_as(bias))
    up = transitions[0]
    x = torch.randn(1, up.conv.in_channels, 6, 5)
    with torch.no_grad():
        shuffled = up.shuffle(up.conv(x))
        single = F.conv2d(x, up.conv.weight[::4], up.conv.bias[::4], padding=1)
    torch.testing.assert_close(shuffled, F.interpolate(single, scale_factor=2, mode="nearest"))


def test_transition_up_blur_is_2x2_box_filter_keeping_size() -> None:
    up = TransitionUp(1)
    x = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    blurred = up.blur(x)
    # Replicate-pad left/top then 2x2 mean: out[i,j] = mean(x[i-1:i+1, j-1:j+1]) with edge repeat.
    expected = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])
    torch.testing.assert_close(blurred, expected)


@pytest.mark.parametrize("name", ["tiramisu", "lupi", "tiramisu_multi"])
def test_channels_last_matches_contiguous(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, **TINY).eval()
    x = _input(40, 56)
    with torch.no_grad():
        expected = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.to(memory_format=torch.channels_last))
    if name == "lupi":
        expected, got = expected[1], got[1]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiramisu", "lupi", "tiramisu_multi", "patchgan"])
def test_bf16_autocast_on_cpu_runs_and_stays_close(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, **({} if name == "patchgan" else TINY)).eval()
    size = (64, 72) if name == "patchgan" else (40, 56)
    x = torch.rand(1, 8 if name == "patchgan" else 7, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
    if name == "lupi":
        expected, got = expected[1], got[1]
    assert got.dtype == torch.bfloat16
    assert torch.isfinite(got.float()).all()
    tolerance = 0.05 * (1 + expected.abs().max().item())
    assert (got.float() - expected).abs().max().item() < tolerance


def test_blur_equals_replication_pad_then_average_pool() -> None:
    from torch import nn

    from vstain.models.layers import Blur2x2

    x = torch.randn(2, 5, 9, 7, generator=torch.Generator().manual_seed(8))
    reference = nn.Sequential(nn.ReplicationPad2d((1, 0, 1, 0)), nn.AvgPool2d(2, stride=1))
    assert torch.equal(Blur2x2()(x), reference(x))
