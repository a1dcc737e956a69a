"""torch.compile (inductor) on the generator: slow, ~10-20 s of compilation on a small CPU."""

from __future__ import annotations

import shutil

import pytest
import torch

from vstain.models import build_model


@pytest.mark.slow
def test_compiled_tiramisu_matches_eager() -> None:
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler for the inductor CPU backend")
    torch.manual_seed(0)
    model = build_model(
        "tiramisu", init_filters=4, down_blocks=[1, 1], bottleneck_layers=1, up_blocks=[1, 1], growth_rate=2
    ).eval()
    x = torch.rand(1, 7, 30, 26, generator=torch.Generator().manual_seed(0))  # padded to 32x28 inside
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # In-process compilation: a worker pool costs more than it saves on a small shared CPU.
    try:
        with inductor_config.patch(compile_threads=1), torch.no_grad():
            expected = model(x)
            got = compiled(x)
    finally:
        torch.set_num_threads(threads)
    assert got.shape == (1, 1, 30, 26)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
