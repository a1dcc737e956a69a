"""Registry: reference configurations, exact parameter counts, argument handling."""

from __future__ import annotations

import json

import pytest

from vstain.errors import ConfigError
from vstain.models import MODEL_NAMES, build_model, model_arguments
from vstain.models.cost import count_parameters


@pytest.mark.parametrize(
    ("name", "expected"),
    [("tiramisu", 1_230_913), ("lupi", 1_602_166), ("patchgan", 1_746_337)],
)
def test_reference_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(build_model(name)) == expected


def test_lupi_parameter_breakdown_matches_inventory() -> None:
    model = build_model("lupi")
    seg_decoder = count_parameters(model.seg_decoder) + count_parameters(model.seg_head)
    final = count_parameters(model.final_block) + count_parameters(model.head)
    assert count_parameters(model.encoder) == 429_248
    assert seg_decoder == 449_090
    assert count_parameters(model.reg_decoder) == 716_416
    assert count_parameters(model.side_heads) == 147
    assert final == 7_265


def test_plain_tiramisu_with_32_filters_matches_inventory() -> None:
    assert count_parameters(build_model("tiramisu", init_filters=32)) == 1_145_841


def test_multi_output_counts() -> None:
    separate = count_parameters(build_model("tiramisu_multi"))
    shared = count_parameters(build_model("tiramisu_multi", decoders="shared"))
    single = count_parameters(build_model("tiramisu"))
    encoder = count_parameters(build_model("tiramisu").encoder)
    # separate = encoder + 3 x (decoder + 1x1 head to one channel)
    assert separate == encoder + 3 * (single - encoder)
    # shared = one generator whose 1x1 head has 3 outputs instead of 1 (192 weights + 1 bias more each)
    assert shared == single + 2 * (192 + 1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_arguments_round_trip_through_json(name: str) -> None:
    arguments = json.loads(json.dumps(model_arguments(name)))
    rebuilt = build_model(name, **arguments)
    assert count_parameters(rebuilt) == count_parameters(build_model(name))


def test_patchgan_registry_default_uses_normal_init() -> None:
    assert model_arguments("patchgan")["init"] == "normal"
    assert model_arguments("lupi")["fusion"] == "sum"


def test_unknown_model_name_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("unet")
    message = str(info.value)
    assert "'unet'" in message and "\n" not in message
    for name in MODEL_NAMES:
        assert name in message


def test_unknown_argument_is_named_with_valid_choices() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("tiramisu", growth=12)
    message = str(info.value)
    assert "'growth'" in message and "growth_rate" in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "overrides", "fragment"),
    [
        ("lupi", {"fusion": "max"}, "fusion"),
        ("patchgan", {"init": "xavier"}, "init"),
        ("tiramisu_multi", {"decoders": "two"}, "decoders"),
        ("tiramisu", {"output_activation": "relu"}, "output_activation"),
        ("tiramisu", {"down_blocks": [4, 4], "up_blocks": [4, 4, 4]}, "up_blocks"),
        ("tiramisu", {"growth_rate": "12"}, "tiramisu"),
    ],
)
def test_bad_values_raise_config_error(name: str, overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        build_model(name, **overrides)
