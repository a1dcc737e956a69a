"""Memory-efficient (checkpointed) dense layers: same numbers as the plain path, BN updated once."""

from __future__ import annotations

import pytest
import torch

from vstain.models import build_model
from vstain.models.cost import saved_activation_bytes

SMALL = dict(init_filters=8, down_blocks=[2, 2], bottleneck_layers=2, up_blocks=[2, 2], growth_rate=4)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors on a shared 2-core box: one intra-op thread is ~10x faster than two."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _pair(name: str, **overrides) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    plain = build_model(name, **SMALL, **overrides)
    torch.manual_seed(0)
    efficient = build_model(name, **SMALL, **overrides, efficient=True)
    efficient.load_state_dict(plain.state_dict())
    return plain.train(), efficient.train()


def _train_step(model: torch.nn.Module, x: torch.Tensor, *, seed: int) -> tuple[torch.Tensor, dict]:
    torch.manual_seed(seed)  # same dropout masks in both paths
    out = model(x)
    if isinstance(out, tuple):  # LUPI: (seg, image, sides)
        seg, image, sides = out
        loss = seg.square().mean() + image.square().mean() + sum(s.square().mean() for s in sides)
        out = image
    else:
        loss = out.square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), grads


@pytest.mark.parametrize(("name", "dropout"), [("tiramisu", 0.0), ("tiramisu", 0.2), ("lupi", 0.2)])
def test_efficient_matches_plain_outputs_gradients_and_running_stats(name: str, dropout: float) -> None:
    plain, efficient = _pair(name, dropout=dropout)
    x = torch.rand(2, 7, 32, 40, generator=torch.Generator().manual_seed(3))
    out_plain, grads_plain = _train_step(plain, x, seed=7)
    out_efficient, grads_efficient = _train_step(efficient, x, seed=7)
    torch.testing.assert_close(out_efficient, out_plain, rtol=0, atol=0)
    for key, grad in grads_plain.items():
        torch.testing.assert_close(grads_efficient[key], grad, rtol=1e-5, atol=1e-7)
    buffers_plain = dict(plain.named_buffers())
    for key, buffer in efficient.named_buffers():
        torch.testing.assert_close(buffer, buffers_plain[key], rtol=0, atol=0, msg=key)


def test_efficient_updates_batchnorm_once_per_step() -> None:
    _, efficient = _pair("tiramisu")
    x = torch.rand(2, 7, 16, 16, generator=torch.Generator().manual_seed(4))
    _train_step(efficient, x, seed=0)
    counts = {
        n: int(b) for n, b in efficient.named_buffers() if n.endswith("num_batches_tracked")
    }
    assert counts and set(counts.values()) == {1}, counts


def test_efficient_eval_and_no_grad_paths_are_plain() -> None:
    plain, efficient = _pair("tiramisu")
    x = torch.rand(1, 7, 24, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(efficient.eval()(x), plain.eval()(x), rtol=0, atol=0)


def test_efficient_saves_activation_memory() -> None:
    plain, efficient = _pair("tiramisu")
    x = torch.rand(1, 7, 64, 64, generator=torch.Generator().manual_seed(6))
    bytes_plain = saved_activation_bytes(plain, x)
    bytes_efficient = saved_activation_bytes(efficient, x)
    assert 0 < bytes_efficient < 0.7 * bytes_plain


def test_naive_checkpoint_would_update_batchnorm_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the test above: without the recompute guard the double update is visible."""
    import contextlib

    from vstain.models import layers

    monkeypatch.setattr(
        layers, "_checkpoint_contexts", lambda: (contextlib.nullcontext(), contextlib.nullcontext())
    )
    _, efficient = _pair("tiramisu")
    x = torch.rand(2, 7, 16, 16, generator=torch.Generator().manual_seed(4))
    _train_step(efficient, x, seed=0)
    dense = {
        int(m.norm.num_batches_tracked)
        for m in efficient.modules()
        if isinstance(m, layers.DenseLayer)
    }
    assert dense == {2}  # checkpointed dense layers: forward + recompute
