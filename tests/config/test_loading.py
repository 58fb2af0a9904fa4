"""Loading YAML configs (issue 18): a key given twice is an error naming it and both lines, not the
silent 'last one wins' of YAML; merge keys may still be overridden."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from diffsr.config import load_config
from diffsr.config.loading import DuplicateKeyError, safe_load_unique
from diffsr.core.errors import ConfigError


def test_two_train_blocks_name_the_key_and_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  steps: 3\ndata:\n  scale: 2\ntrain:\n  lr: 0.001\n")
    assert yaml.safe_load(path.read_text())["train"] == {"lr": 0.001}  # what YAML alone does: steps lost
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: duplicate key 'train' (lines 1 and 5); YAML keeps only the last"


def test_a_nested_duplicate_and_a_merge_override() -> None:
    with pytest.raises(DuplicateKeyError, match=r"'steps' \(lines 2 and 3\)"):
        safe_load_unique("train:\n  steps: 3\n  steps: 4\n")
    merged = safe_load_unique("base: &b {steps: 3, lr: 0.1}\ntrain:\n  <<: *b\n  steps: 4\n")
    assert merged["train"] == {"steps": 4, "lr": 0.1}  # an explicit key over a merged one is YAML's intent
    with pytest.raises(yaml.YAMLError):  # still the safe loader: no Python objects
        safe_load_unique("x: !!python/object/apply:os.system ['true']\n")
