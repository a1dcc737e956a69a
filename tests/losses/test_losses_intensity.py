"""LogSquaredLoss and MedianMAE against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from vstain.losses import (
    DEFAULT_EPS,
    REFERENCE_LOG_EPS,
    LogSquaredLoss,
    LupiLoss,
    MedianMAE,
    dataset_reference,
    target_median,
)


def img(values, b=1):
    """(b, 1, 2, 2) tensor from a flat list of 4*b values."""
    return torch.tensor(values, dtype=torch.float32).view(b, 1, 2, 2)


# --- LogSquaredLoss -------------------------------------------------------------------------


def test_reference_eps_reproduces_47_7_on_one_zero_pixel():
    # One zero target pixel predicted as 0.01, three exact pixels:
    # (ln(1e-8 / (0.01 + 1e-8)))**2 / 4 = (-13.8155)**2 / 4 = 47.717
    x = img([0.01, 0.5, 0.5, 0.5])
    y = img([0.0, 0.5, 0.5, 0.5])
    loss = LogSquaredLoss(eps=REFERENCE_LOG_EPS)(x, y)
    expected = math.log(1e-8 / (0.01 + 1e-8)) ** 2 / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert round(loss.item(), 1) == 47.7


def test_default_eps_same_pixel_costs_ln11_squared_over_4():
    # (ln(0.001 / 0.011))**2 / 4 = (ln 11)**2 / 4 = 2.3979**2 / 4 = 1.4375
    x = img([0.01, 0.5, 0.5, 0.5])
    y = img([0.0, 0.5, 0.5, 0.5])
    assert DEFAULT_EPS == 1e-3
    assert LogSquaredLoss()(x, y).item() == pytest.approx(math.log(11) ** 2 / 4, rel=1e-5)


def test_log_squared_hand_value_ratios_of_ten():
    # x + eps = [1, 0.1, 1, 1], y + eps = [1, 1, 0.1, 1] -> ln ratios 0, ln10, -ln10, 0
    # loss = 2 (ln 10)**2 / 4 = 2.6509
    x = img([0.999, 0.099, 0.999, 0.999])
    y = img([0.999, 0.999, 0.099, 0.999])
    assert LogSquaredLoss(eps=1e-3)(x, y).item() == pytest.approx(math.log(10) ** 2 / 2, rel=1e-5)


def test_zero_target_cost_and_gradient_are_bounded_by_the_floor():
    # Worst zero-target pixel: prediction 1 -> (ln((1 + eps) / eps))**2 = (ln 1001)**2 = 47.73
    loss_fn = LogSquaredLoss()
    worst = loss_fn(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item()
    assert worst == pytest.approx(math.log(1001) ** 2, rel=1e-5)
    for pred in torch.linspace(0, 1, 11):
        assert loss_fn(torch.full((1, 1, 2, 2), float(pred)), torch.zeros(1, 1, 2, 2)).item() <= worst + 1e-4

    # Gradient at x = 0 against y = 1 (one pixel): |d/dx| = 2 ln((1 + eps) / eps) / eps
    def grad_at_zero(eps):
        x = torch.zeros(1, 1, 1, 1, requires_grad=True)
        LogSquaredLoss(eps=eps)(x, torch.ones(1, 1, 1, 1)).backward()
        return x.grad.abs().item()

    assert grad_at_zero(1e-3) == pytest.approx(2 * math.log(1001) / 1e-3, rel=1e-4)  # 1.4e4
    assert grad_at_zero(1e-8) > 1e9  # the reference: 3.7e9


def test_log_squared_rejects_non_positive_eps_and_shape_mismatch():
    with pytest.raises(ValueError, match="eps"):
        LogSquaredLoss(eps=0)
    with pytest.raises(ValueError, match="shape"):
        LogSquaredLoss()(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))


# --- MedianMAE ------------------------------------------------------------------------------


def two_sample_batch():
    # sample 0: y = [.1 .2 .3 .4] (lower median .2), |x - y| = [.1 0 0 .1] -> MAE .05 -> .25
    # sample 1: y = [.5 .6 .7 .8] (lower median .6), |x - y| = [.12 0 0 0] -> MAE .03 -> .05
    y = img([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], b=2)
    x = y + img([0.1, 0.0, 0.0, 0.1, 0.12, 0.0, 0.0, 0.0], b=2)
    return x, y


def test_median_mae_per_sample_hand_value():
    x, y = two_sample_batch()
    # (0.25 + 0.05) / 2 = 0.15
    assert MedianMAE()(x, y).item() == pytest.approx(0.15, rel=1e-5)


def test_median_mae_batch_median_is_the_reference_and_the_lower_median():
    x, y = two_sample_batch()
    # all 8 values: lower median = 0.4 (torch.median; the midpoint would be 0.45)
    # MAE over the batch = (0.1 + 0.1 + 0.12) / 8 = 0.04 -> 0.04 / 0.4 = 0.1
    assert MedianMAE(median="batch")(x, y).item() == pytest.approx(0.1, rel=1e-5)
    assert target_median(y, scope="batch").item() == pytest.approx(0.4)
    assert target_median(y, scope="sample").flatten().tolist() == pytest.approx([0.2, 0.6])
    assert target_median(y, scope="sample").shape == (2, 1, 1, 1)


def test_sample_median_is_per_channel_for_multi_stain_targets():
    # channel 0 = [.1 .2 .3 .4] (lower median .2), channel 1 = [.5 .6 .7 .8] (lower median .6)
    y = img([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], b=2).view(1, 2, 2, 2)
    med = target_median(y)
    assert med.shape == (1, 2, 1, 1) and med.flatten().tolist() == pytest.approx([0.2, 0.6])
    # same errors as two_sample_batch, now as two channels of one sample: (.25 + .05) / 2
    x = y + img([0.1, 0.0, 0.0, 0.1, 0.12, 0.0, 0.0, 0.0], b=2).view(1, 2, 2, 2)
    assert MedianMAE()(x, y).item() == pytest.approx(0.15, rel=1e-5)


def test_median_mae_all_zero_target_is_bounded_by_eps():
    # median 0 is clamped to eps: 0.5 / 1e-3 = 500 (reference: division by zero -> inf)
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.zeros(1, 1, 2, 2)
    assert MedianMAE()(x, y).item() == pytest.approx(500.0, rel=1e-5)
    assert MedianMAE(eps=0.01)(x, y).item() == pytest.approx(50.0, rel=1e-5)
    assert MedianMAE(median="batch")(x, y).item() == pytest.approx(500.0, rel=1e-5)


def test_median_mae_rejects_unknown_scope():
    with pytest.raises(ValueError, match="median"):
        MedianMAE(median="mean")


@pytest.mark.parametrize("loss_fn", [LogSquaredLoss(), MedianMAE(), MedianMAE(median="batch")])
def test_intensity_losses_gradients_reach_x_only(loss_fn):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 8, 8, generator=gen, requires_grad=True)
    y = torch.rand(2, 1, 8, 8, generator=gen, requires_grad=True)
    loss_fn(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # median(y) is detached; y still gets gradient through the |x - y| / log terms only.
    assert torch.isfinite(y.grad).all()


@pytest.mark.parametrize("loss_fn", [LogSquaredLoss(), MedianMAE()])
def test_intensity_losses_deterministic_and_float32_for_bf16(loss_fn):
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 1, 16, 16, generator=gen), torch.rand(2, 1, 16, 16, generator=gen)
    assert torch.equal(loss_fn(x, y), loss_fn(x.clone(), y.clone()))
    low = loss_fn(x.bfloat16(), y.bfloat16())
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(loss_fn(x, y).item(), rel=0.05)


def test_median_mae_dataset_scope_hand_value():
    x = torch.tensor([[[[0.2, 0.4]]], [[[0.0, 1.0]]]])
    y = torch.tensor([[[[0.3, 0.6]]], [[[0.0, 0.5]]]])
    # mean(|0.1|, |0.2|, 0, |0.5|) = 0.2, divided by the fixed reference 0.5
    assert MedianMAE(median="dataset", reference=[0.5])(x, y).item() == pytest.approx(0.4, rel=1e-6)


def test_dataset_scope_is_the_challenge_pixel_metric_on_raw_counts():
    # With n = (raw - low) / span, the loss equals mean|raw error| / raw median exactly, whatever
    # the crop: a dark crop cannot rescale the loss as a per-crop median does.
    gen = torch.Generator().manual_seed(3)
    low, high = 100.0, 2100.0
    raw_y = torch.randint(80, 2500, (3, 1, 16, 16), generator=gen).float()
    raw_x = raw_y + torch.randn(3, 1, 16, 16, generator=gen) * 50
    raw_median = 900.0
    reference = dataset_reference(raw_median, low, high)
    assert reference == pytest.approx(0.45)
    loss = MedianMAE(median="dataset", reference=[reference])
    normalised = loss((raw_x - low) / (high - low), (raw_y - low) / (high - low))
    assert normalised.item() == pytest.approx(((raw_x - raw_y).abs().mean() / raw_median).item(), rel=1e-5)


def test_dataset_scope_is_per_channel():
    x = torch.zeros(1, 2, 2, 2)
    y = torch.ones(1, 2, 2, 2)
    # channel 0: mean|1| / 0.5 = 2; channel 1: mean|1| / 0.25 = 4 -> mean 3
    assert MedianMAE(median="dataset", reference=[0.5, 0.25])(x, y).item() == pytest.approx(3.0)


def test_dataset_scope_needs_matching_positive_references():
    with pytest.raises(ValueError, match="reference"):
        MedianMAE(median="dataset")
    with pytest.raises(ValueError, match="reference"):
        MedianMAE(median="dataset", reference=[0.0])
    with pytest.raises(ValueError, match="2 target channel"):
        MedianMAE(median="dataset", reference=[0.5])(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))


def test_lupi_loss_dataset_scope_uses_the_reference_in_every_mae_term():
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(2, 1, 8, 8, generator=gen)
    target = torch.rand(2, 1, 8, 8, generator=gen)
    logits = torch.randn(2, 2, 8, 8, generator=gen)
    mask = (torch.rand(2, 8, 8, generator=gen) > 0.5).float()
    sides = [torch.randn(2, 1, 4, 4, generator=gen)]
    _, half = LupiLoss(median="dataset", reference=[0.5])(logits, image, sides, target, mask)
    _, quarter = LupiLoss(median="dataset", reference=[0.25])(logits, image, sides, target, mask)
    # Halving the reference doubles every MAE term and leaves the BCE terms alone.
    for term in ("median_mae", "lwm_weighted_mae", "lwm_side"):
        assert quarter[term].item() == pytest.approx(2 * half[term].item(), rel=1e-5)
    for term in ("bce", "lwm_weighted_bce"):
        assert quarter[term].item() == pytest.approx(half[term].item(), rel=1e-6)


def test_squared_term_hand_value_and_zero_is_the_plain_metric():
    x = torch.tensor([[[[0.5, 0.0]]]])
    y = torch.tensor([[[[0.4, 1.0]]]])
    # ratios r = d / 0.5: 0.2 and -2; |r| + 0.5 r^2 = 0.22 and 4.0 -> mean 2.11
    assert MedianMAE(median="dataset", reference=[0.5], squared=0.5)(x, y).item() == pytest.approx(2.11)
    assert MedianMAE(median="dataset", reference=[0.5], squared=0.0)(x, y).item() == pytest.approx(1.1)
    with pytest.raises(ValueError, match="squared"):
        MedianMAE(squared=-1.0)


def test_squared_term_pulls_large_errors_harder_than_small_ones():
    # The L1 gradient is the same for every pixel; with the squared term a pixel 5 medians off
    # pulls 6x as hard as one 0 medians off (1 + 2 * 0.5 * 5), and a small error stays ~L1.
    x = torch.tensor([[[[0.0, 0.0]]]], requires_grad=True)
    y = torch.tensor([[[[1e-4, 1.0]]]])
    MedianMAE(median="dataset", reference=[0.2], squared=0.5)(x, y).backward()
    small, large = (-x.grad[0, 0, 0]).tolist()
    assert large / small == pytest.approx(6.0, rel=1e-3)


def test_lupi_loss_passes_the_squared_weight_to_every_mae_term():
    gen = torch.Generator().manual_seed(5)
    image, target = torch.rand(2, 1, 8, 8, generator=gen), torch.rand(2, 1, 8, 8, generator=gen)
    logits, mask = torch.randn(2, 2, 8, 8, generator=gen), (torch.rand(2, 8, 8, generator=gen) > 0.5).float()
    _, plain = LupiLoss(median="dataset", reference=[0.5])(logits, image, [], target, mask)
    _, squared = LupiLoss(median="dataset", reference=[0.5], squared=1.0)(logits, image, [], target, mask)
    for term in ("median_mae", "lwm_weighted_mae"):
        assert squared[term] > plain[term]
    assert squared["bce"] == plain["bce"]
