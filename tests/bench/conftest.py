"""The bench's tests run tiny networks, dominated by per-op overhead: one intra-op thread is
steadier on a shared 2-core machine (see tests/inference/conftest.py)."""

import torch

torch.set_num_threads(1)
