"""Config loading, overrides and the generated reference in docs/configs.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from vstain.config import apply_overrides, load_config, schema_markdown
from vstain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_docs_configs_md_is_generated_from_the_schema():
    assert (ROOT / "docs" / "configs.md").read_text() == schema_markdown(), (
        "docs/configs.md is stale: run `python -m vstain.config > docs/configs.md`"
    )


def test_every_key_is_documented():
    text = schema_markdown()
    for key in ("data.root", "data.augment.rotate", "gan.discriminator.name", "finetune.lr", "trainer.precision"):
        assert f"`{key}`" in text


def test_overrides_parse_yaml_scalars_and_create_sections():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=3", "a.c=[1, 2]", "d.e=true", "f=text"])
    assert data == {"a": {"b": 3, "c": [1, 2]}, "d": {"e": True}, "f": "text"}
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match=r"a\.b\.c: b is not a section"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])


def test_json_configs_and_syntax_errors(tmp_path):
    good = tmp_path / "c.json"
    good.write_text('{"name": "x", "recipe": "regression", "data": {"root": "%s", "targets": ["lipids"]}}' % tmp_path)
    assert load_config(good).data.targets == ["lipids"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"name: x\nrecipe: lupi\ndata: {{root: {tmp_path}, targets: [nuclei]}}\n")
    with pytest.raises(ConfigError, match="the lupi recipe trains the 'lupi' model"):
        load_config(wrong)
