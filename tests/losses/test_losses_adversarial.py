"""Relativistic-average LSGAN losses (sign conventions, pool means) and the two pools."""

from __future__ import annotations

import pytest
import torch

from vstain.losses import ImagePool, OutputHistoryPool, RaLSGANDiscriminatorLoss, RaLSGANGeneratorLoss

LD, LG = RaLSGANDiscriminatorLoss(), RaLSGANGeneratorLoss()


@pytest.mark.parametrize(
    ("real", "fake", "loss_d", "loss_g"),
    [
        # perfect D: real - mean(fake) = +1, fake - mean(real) = -1
        # L_D = 1/2[(1-1)^2 + (-1+1)^2] = 0; L_G = 1/2[(1+1)^2 + (-1-1)^2] = 4
        (0.5, -0.5, 0.0, 4.0),
        # fooled D: real - mean(fake) = -1, fake - mean(real) = +1 -> L_D = 4, L_G = 0
        (-0.5, 0.5, 4.0, 0.0),
        # undecided D (all equal): L_D = 1/2[1 + 1] = 1 = L_G
        (0.3, 0.3, 1.0, 1.0),
    ],
)
def test_sign_conventions(real, fake, loss_d, loss_g):
    d_real, d_fake = torch.full((2, 1, 3, 3), real), torch.full((2, 1, 3, 3), fake)
    assert LD(d_real, d_fake).item() == pytest.approx(loss_d)
    assert LG(d_real, d_fake).item() == pytest.approx(loss_g)


def test_hand_set_outputs_with_pool_means():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    refs = {"real_reference": torch.tensor(1.5), "fake_reference": torch.tensor(0.0)}
    # L_D: real - 0 - 1 = [0, 2] -> mean sq 2; fake - 1.5 + 1 = [-0.5, -2.5] -> 3.25; 1/2 (5.25)
    assert LD(d_real, d_fake, **refs).item() == pytest.approx(2.625)
    # L_G: real - 0 + 1 = [2, 4] -> 10; fake - 1.5 - 1 = [-2.5, -4.5] -> 13.25; 1/2 (23.25)
    assert LG(d_real, d_fake, **refs).item() == pytest.approx(11.625)
    # batch means (2 and -1): L_D: real + 1 - 1 = [1, 3] -> 5; fake - 2 + 1 = [-1, -3] -> 5
    assert LD(d_real, d_fake).item() == pytest.approx(5.0)


def test_pool_means_carry_no_gradient():
    d_real = torch.tensor([1.0, 3.0], requires_grad=True)
    pool = OutputHistoryPool(4)
    pool.push(d_real.view(2, 1))
    assert not pool.mean().requires_grad
    loss = LD(d_real, torch.tensor([0.0, -2.0]), real_reference=pool.mean(), fake_reference=0.0)
    loss.backward()
    # d/d real_i of 1/2 * mean((real - 0 - 1)^2) = (real_i - 1) / 2 = [0, 1]
    assert d_real.grad.tolist() == pytest.approx([0.0, 1.0])


# --- OutputHistoryPool (reference FIFO) ------------------------------------------------------


def column(*values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)


def test_history_pool_fifo_order_capacity_and_mean():
    pool = OutputHistoryPool(3)
    with pytest.raises(RuntimeError, match="empty"):
        pool.mean()
    pool.push(column(1, 2))
    assert pool.mean().item() == pytest.approx(1.5)  # includes the batch just pushed
    pool.push(column(3, 4))  # 1 is evicted
    assert [t.item() for t in pool.items()] == [2, 3, 4]
    assert pool.mean().item() == pytest.approx(3.0)
    pool.push(column(10))
    assert [t.item() for t in pool.items()] == [3, 4, 10] and len(pool) == 3
    assert pool.mean().item() == pytest.approx(17 / 3)


def test_history_pool_mean_runs_over_every_value_of_every_map():
    pool = OutputHistoryPool(50)
    maps = torch.arange(8.0).view(2, 1, 2, 2)  # sample means 1.5 and 5.5
    pool.push(maps)
    assert pool.mean().item() == pytest.approx(3.5)
    maps += 100  # pool stores detached copies
    assert pool.mean().item() == pytest.approx(3.5)


def test_history_pool_state_round_trip_through_torch_save(tmp_path):
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 1, 3, 3, generator=gen) for _ in range(20)]
    original = OutputHistoryPool(50)
    for b in batches[:10]:
        original.push(b)
    torch.save(original.state_dict(), tmp_path / "pool.pt")
    resumed = OutputHistoryPool(7)
    resumed.load_state_dict(torch.load(tmp_path / "pool.pt", weights_only=True))
    assert resumed.capacity == 50 and len(resumed) == 40
    for b in batches[10:]:
        original.push(b)
        resumed.push(b)
        assert torch.equal(original.mean(), resumed.mean())
    assert all(torch.equal(a, b) for a, b in zip(original.items(), resumed.items(), strict=True))


def test_history_pool_rejects_zero_capacity():
    with pytest.raises(ValueError, match="capacity"):
        OutputHistoryPool(0)


# --- ImagePool (pix2pix random replacement) --------------------------------------------------


def ids(batch):
    return [int(v) for v in batch.flatten().tolist()]


def test_image_pool_fills_then_returns_inputs_unchanged():
    pool = ImagePool(3, seed=0)
    out = pool.query(column(1, 2))
    assert ids(out) == [1, 2] and len(pool) == 2
    out = pool.query(column(3))
    assert ids(out) == [3] and ids(torch.stack(pool.items())) == [1, 2, 3]


def test_image_pool_random_replacement_conserves_samples_and_swaps_half():
    pool = ImagePool(5, probability=0.5, seed=123)
    pool.query(column(*range(5)))
    swapped, total = 0, 0
    next_id = 5
    for _ in range(100):
        new = list(range(next_id, next_id + 4))
        next_id += 4
        before = set(ids(torch.stack(pool.items())))
        out = ids(pool.query(column(*new)))
        after = set(ids(torch.stack(pool.items())))
        # Nothing is created or lost: what went out plus what stayed = what was there plus what came in.
        assert sorted(out + sorted(after)) == sorted(sorted(before) + new)
        swapped += sum(o not in new for o in out)
        total += len(new)
    assert 0.4 < swapped / total < 0.6


def test_image_pool_probability_extremes_and_capacity_zero():
    never = ImagePool(2, probability=0.0, seed=0)
    never.query(column(1, 2))
    assert ids(never.query(column(3, 4))) == [3, 4] and ids(torch.stack(never.items())) == [1, 2]
    always = ImagePool(2, probability=1.0, seed=0)
    always.query(column(1, 2))
    out = ids(always.query(column(3)))
    assert out[0] in (1, 2)
    assert ImagePool(0).query(column(7, 8)).tolist() == column(7, 8).tolist()


def test_image_pool_seeded_and_state_round_trip(tmp_path):
    def run(pool, start, n):
        return [ids(pool.query(column(i, i + 1))) for i in range(start, start + 2 * n, 2)]

    a, b = ImagePool(4, seed=7), ImagePool(4, seed=7)
    assert run(a, 0, 20) == run(b, 0, 20)  # same seed, same history
    assert run(ImagePool(4, seed=8), 0, 20) != run(ImagePool(4, seed=7), 0, 20)

    torch.save(a.state_dict(), tmp_path / "image_pool.pt")
    resumed = ImagePool(1, probability=0.9, seed=99)
    resumed.load_state_dict(torch.load(tmp_path / "image_pool.pt", weights_only=True))
    assert run(resumed, 100, 30) == run(a, 100, 30)  # stored samples and RNG both restored


def test_image_pool_outputs_are_detached():
    x = torch.rand(3, 1, 2, 2, requires_grad=True)
    pool = ImagePool(2, probability=1.0, seed=0)
    assert not pool.query(x * 2).requires_grad
