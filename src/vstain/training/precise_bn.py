"""Precise BatchNorm statistics before every validation (``trainer.precise_bn_batches``).

In training, BatchNorm normalises with each batch's own statistics and keeps a running average of
them (momentum 0.1) for evaluation. With the small batches of the CPU recipes (4 crops) that
average follows the last ~10 batches of a network whose weights are still moving, so the
evaluation-mode network is normalised with statistics of weights that no longer exist and of a
few crops: the validation error of whole fields can swing several-fold from one epoch to the next
while the training loss falls smoothly (docs/training.md, "Precise BatchNorm statistics").

Before each validation this callback recomputes every BatchNorm layer's statistics as the plain
average over ``batches`` training batches run through the current weights (no gradients, dropout
off, the other layers as in evaluation), the "precise BN" of Wu & Johnson, *Rethinking "Batch" in
BatchNorm* (2021). The batches are the first ones of the epoch just trained, read from the
training dataset by their sample ids (:class:`vstain.data.datasets.EpochSampler`), so the
training stream, and with it a resumed run, is unchanged. The checkpoints, the "best" model and
the exported bundle carry the recomputed statistics; training then continues from them with the
layers' own momentum.
"""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.utils.data import default_collate

__all__ = ["PreciseBatchNorm", "recompute_batch_norm"]


def recompute_batch_norm(network: nn.Module, batches: Any, forward: Any) -> int:
    """Replace the running statistics of ``network``'s BatchNorm layers with their average over ``batches``.

    Parameters
    ----------
    network
        The network whose ``nn.modules.batchnorm._BatchNorm`` layers are recomputed; its training
        flags are restored afterwards.
    batches
        Iterable of inputs for ``forward``.
    forward
        Called with each batch to run ``network`` (e.g. the recipe's ``prepare_input`` then the network).

    Returns
    -------
    int
        The number of batches averaged (0: the network has no BatchNorm layer or no batch came, and
        nothing was changed).
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    modes = {m: m.training for m in network.modules()}
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    count = 0
    try:
        network.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: every batch weighs the same
            norm.train()
        with torch.no_grad():
            for batch in batches:
                forward(batch)
                count += 1
    finally:
        for norm, (momentum, mean, var, tracked) in zip(norms, saved):
            norm.momentum = momentum
            if count == 0:  # nothing seen: keep the statistics it had
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
                norm.num_batches_tracked.copy_(tracked)
        for module, training in modes.items():
            module.train(training)
    return count


class PreciseBatchNorm(Callback):
    """Recompute the generator's BatchNorm statistics on ``batches`` training batches before each validation."""

    def __init__(self, batches: int) -> None:
        if batches < 1:
            raise ValueError("batches must be >= 1")
        self.batches = batches

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # only inside fit: a plain `validate` call evaluates the weights as they are
        datamodule = trainer.datamodule
        dataset = datamodule.train_dataset
        loader = datamodule.train_dataloader()
        sampler = loader.sampler
        sampler.set_epoch(trainer.current_epoch)
        size = loader.batch_size or 1
        ids = list(itertools.islice(iter(sampler), self.batches * size))
        device = module.device

        def batches():
            for start in range(0, len(ids), size):
                batch = default_collate([dataset[i] for i in ids[start:start + size]])
                yield batch["image"].to(device)

        def forward(image: torch.Tensor) -> None:
            # Under the run's precision (autocast for mixed precision), as in the training steps.
            with trainer.precision_plugin.forward_context():
                module.generator(module.prepare_input(image))

        recompute_batch_norm(module.generator, batches(), forward)
