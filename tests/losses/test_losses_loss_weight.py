"""Loss-weight-module loss and the full LUPI objective, hand-computed on a 2x2 field."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vstain.losses import (
    LossWeightModuleLoss,
    LupiLoss,
    MedianMAE,
    SegmentationBCE,
    misclassification_weight,
    resize_map,
    scaled_tanh,
)

A = math.log1p(math.exp(-1.0))  # BCE of a logit +-1 on the right side: 0.3133
B = math.log1p(math.exp(1.0))  # ... on the wrong side: 1.3133


def tiny():
    """2x2 example: one misclassified pixel, target lower median 0.2, one 1x1 side output."""
    image = torch.tensor([[0.2, 0.4], [0.6, 0.8]]).view(1, 1, 2, 2)
    target = torch.tensor([[0.2, 0.2], [0.4, 0.8]]).view(1, 1, 2, 2)  # |x - y| = [0, .2, .2, 0]
    mask = torch.tensor([[0, 0], [1, 1]]).view(1, 2, 2)
    # argmax -> [[0, 1], [1, 1]]: pixel (0, 1) is wrong, so w = [[1, 2], [1, 1]]
    bg = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])
    seg = torch.stack([bg, -bg]).view(1, 2, 2, 2)
    side = [torch.zeros(1, 1, 1, 1)]  # scaled_tanh(0) = 0.5
    return image, target, seg, mask, side


def test_misclassification_weight_has_no_gradient():
    image, target, seg, mask, _ = tiny()
    seg.requires_grad_(True)
    w = misclassification_weight(seg, mask)
    assert w.tolist() == [[[[1.0, 2.0], [1.0, 1.0]]]]
    assert not w.requires_grad


def test_lwm_terms_hand_values_area():
    image, target, seg, mask, side = tiny()
    terms = LossWeightModuleLoss().terms(image, target, seg, mask, side)
    # weighted MAE: (1*0 + 2*.2 + 1*.2 + 1*0) / 0.2 / 4 = 0.75
    assert terms["weighted_mae"].item() == pytest.approx(0.75, rel=1e-6)
    # weighted BCE over 8 values: pixels (0,0), (1,0), (1,1) right -> 2A each (w 1),
    # pixel (0,1) wrong -> 2B with w 2 -> (6A + 4B) / 8
    assert terms["weighted_bce"].item() == pytest.approx((6 * A + 4 * B) / 8, rel=1e-6)
    # side, area: y_1 = mean(y) = 0.4, w_1 = mean(w) = 1.25 -> 1.25 * |0.5 - 0.4| / 0.4 = 0.3125
    assert terms["side"].item() == pytest.approx(0.3125, rel=1e-5)
    total = LossWeightModuleLoss()(image, target, seg, mask, side)
    assert total.item() == pytest.approx(0.5 * 0.75 + (6 * A + 4 * B) / 8 + 0.1 * 0.3125, rel=1e-6)


def test_lwm_side_nearest_is_the_reference_and_differs_from_area():
    image, target, seg, mask, side = tiny()
    # nearest keeps the top-left pixel: y_1 = 0.2, w_1 = 1 -> |0.5 - 0.2| / 0.2 = 1.5
    nearest = LossWeightModuleLoss(resize="nearest").terms(image, target, seg, mask, side)["side"]
    assert nearest.item() == pytest.approx(1.5, rel=1e-5)
    weights = LossWeightModuleLoss(mae_weight=1.0, bce_weight=0.0, side_weight=2.0, resize="nearest")
    assert weights(image, target, seg, mask, side).item() == pytest.approx(0.75 + 2 * 1.5, rel=1e-6)


def test_resize_modes_on_a_4x4_ramp():
    ramp = torch.arange(16.0).view(1, 1, 4, 4)
    assert resize_map(ramp, (2, 2), mode="nearest").flatten().tolist() == [0, 2, 8, 10]
    assert resize_map(ramp, (2, 2), mode="area").flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # block means
    bilinear = resize_map(ramp, (2, 2), mode="bilinear")
    assert bilinear.mean().item() == pytest.approx(7.5) and not torch.equal(bilinear, ramp[..., ::2, ::2])
    assert resize_map(ramp, (4, 4)) is ramp
    with pytest.raises(ValueError, match="resize"):
        resize_map(ramp, (2, 2), mode="bicubic")


def test_lupi_loss_hand_value_and_components():
    image, target, seg, mask, side = tiny()
    total, parts = LupiLoss()(seg, image, side, target, mask)
    lwm = 0.5 * 0.75 + (6 * A + 4 * B) / 8 + 0.1 * 0.3125
    bce = (6 * A + 2 * B) / 8  # unweighted: pixel (0,1) contributes 2B once
    median_mae = (0.4 / 4) / 0.2  # 0.5
    assert parts["lwm"].item() == pytest.approx(lwm, rel=1e-6)
    assert parts["bce"].item() == pytest.approx(bce, rel=1e-6)
    assert parts["median_mae"].item() == pytest.approx(median_mae, rel=1e-6)
    assert total.item() == pytest.approx(lwm + bce + 0.5 * median_mae, rel=1e-6)
    assert set(parts) == {"total", "lwm", "lwm_weighted_mae", "lwm_weighted_bce", "lwm_side", "bce", "median_mae"}
    assert all(not v.requires_grad for v in parts.values())
    # eval mode: no side outputs -> side term 0
    _, no_side = LupiLoss()(seg, image, None, target, mask)
    assert no_side["lwm_side"].item() == 0.0


def reference_lwm(x, y, s, m, side):
    """The reference formula (inventory section 3): batch median, nearest resize, inferred one_hot."""
    w = torch.eq(s.argmax(1, keepdim=True), m.unsqueeze(1)).float()
    w[w == 0] = 2
    onehot = F.one_hot(m.unsqueeze(1).long()).squeeze(1).permute(0, 3, 1, 2).float()
    wbce = (F.binary_cross_entropy_with_logits(s, onehot, reduction="none") * w).mean()
    wmae = ((x - y).abs() / torch.median(y) * w).mean()
    side_loss = 0.0
    for z in side:
        yk = F.interpolate(y, z.shape[-2:])
        wk = F.interpolate(w, z.shape[-2:])
        side_loss += ((scaled_tanh(z) - yk).abs() / torch.median(yk) * wk).mean()
    return 0.5 * wmae + wbce + 0.1 * side_loss


def random_batch(seed, *, foreground=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 16, 16, generator=gen, requires_grad=True)
    y = torch.rand(2, 1, 16, 16, generator=gen) * 0.5 + 0.05
    s = torch.randn(2, 2, 16, 16, generator=gen, requires_grad=True)
    m = (torch.rand(2, 16, 16, generator=gen) > 0.7).long() if foreground else torch.zeros(2, 16, 16, dtype=torch.long)
    side = [torch.randn(2, 1, n, n, generator=gen, requires_grad=True) for n in (2, 4, 8)]
    return x, y, s, m, side


def test_reference_options_reproduce_the_reference_formula():
    x, y, s, m, side = random_batch(0)
    ours = LossWeightModuleLoss(median="batch", resize="nearest")(x, y, s, m, side)
    assert ours.item() == pytest.approx(reference_lwm(x, y, s, m, side).item(), rel=1e-5)


def test_no_nucleus_batch_works_where_the_reference_crashes():
    x, y, s, m, side = random_batch(1, foreground=False)
    with pytest.raises(ValueError, match="Target size"):  # one one-hot channel vs two logits
        reference_lwm(x, y, s, m, side)
    total, parts = LupiLoss()(s, x, side, y, m)
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    total.backward()
    assert s.grad.abs().sum() > 0


def test_gradients_reach_image_logits_and_side_outputs_but_not_weights():
    x, y, s, m, side = random_batch(2)
    total, _ = LupiLoss()(s, x, side, y, m)
    total.backward()
    for t in (x, s, *side):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # The weighted MAE depends on the logits only through w, which has no gradient.
    x2, y2, s2, m2, side2 = random_batch(2)
    LossWeightModuleLoss().terms(x2, y2, s2, m2, side2)["weighted_mae"].backward()
    assert s2.grad is None and x2.grad.abs().sum() > 0


def test_lupi_loss_is_deterministic_and_matches_its_parts():
    a = random_batch(3)
    b = random_batch(3)
    loss = LupiLoss(median="batch")
    total_a, parts_a = loss(a[2], a[0], a[4], a[1], a[3])
    total_b, _ = loss(b[2], b[0], b[4], b[1], b[3])
    assert torch.equal(total_a, total_b)
    x, y, s, m, side = a
    expected = (
        LossWeightModuleLoss(median="batch")(x, y, s, m, side)
        + SegmentationBCE()(s, m)
        + 0.5 * MedianMAE(median="batch")(x, y)
    )
    assert total_a.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts_a["total"].item() == pytest.approx(total_a.item())
