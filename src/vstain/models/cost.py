"""What a network costs: parameters, forward FLOPs and activation memory kept for backward.

FLOPs are counted on the ``meta`` device (shapes only, no arithmetic), so a 512² count is instant.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "forward_flops", "saved_activation_bytes"]


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (all, or only those requiring grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Forward FLOPs (2 per multiply-add) of ``model`` in eval mode for an input of ``shape``.

    The model is copied to the meta device, so nothing is computed and ``model`` is untouched.
    Only the ops PyTorch's flop counter knows (convolutions, matmuls) are counted; element-wise
    ops (BN, ReLU, pooling) are ignored, as usual for this figure.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    return int(counter.get_total_flops())


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of activations kept alive for backward by one training-mode forward of ``model`` on ``x``.

    Sums the distinct storages autograd saves (``saved_tensors_hooks``), excluding parameters,
    plus the inputs of gradient-checkpointed regions (which checkpointing keeps instead of the
    region's intermediates; their own saved tensors are invisible to outer hooks, as intended).
    The model's training flag is restored afterwards; its BN running stats are updated once.
    """
    parameter_ptrs = {p.data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def remember(t: torch.Tensor) -> None:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in parameter_ptrs and t.device.type != "meta":
            storages[ptr] = t.untyped_storage().nbytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        remember(t)
        return t

    def remember_inputs(_module: nn.Module, args: tuple) -> None:
        for feature in args[0]:
            remember(feature)

    handles = [
        module.register_forward_pre_hook(remember_inputs)
        for module in model.modules()
        if getattr(module, "efficient", False) and hasattr(module, "_bottleneck")
    ]
    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x.detach())
        del out
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sum(storages.values())
