"""Config validation, overrides, presets and the one-line error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from diffsr.config import Config, load_config, preset_names, validate
from diffsr.core.errors import ConfigError


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name: str, tmp_path: Path) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg  # a saved run config reloads unchanged


def test_typo_names_key_and_closest_valid_key() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"codec": {"name": "wavelet", "layuot": "ll"}})
    assert str(info.value) == "config: unknown key 'codec.layuot' (did you mean 'codec.layout'?)"


@pytest.mark.parametrize(("data", "message"), [
    ({"codec": {"name": "pixel", "layout": "ll"}},
     "config: unknown key 'codec.layout' for codec 'pixel' (codec.layout belongs to 'wavelet')"),
    ({"codec": {"name": "vae", "path": "w", "levels": 2}},
     "config: unknown key 'codec.levels' for codec 'vae' (codec.levels belongs to 'wavelet')"),
    ({"net": {"name": "edsr", "width": 32}, "process": {"name": "direct"}},
     "config: unknown key 'net.width' for net 'edsr' (net.width belongs to 'unet' and others)"),
    ({"losses": {"terms": [{"name": "l1", "eps": 0.1}]}},
     "config: unknown key 'losses.terms.0.eps' for loss term 'l1' (losses.terms.0.eps belongs to 'charbonnier')"),
    ({"data": {"degradation": {"name": "bicubic", "rician": 0.1}}},
     "config: unknown key 'data.degradation.rician' for degradation 'bicubic' "
     "(data.degradation.rician belongs to 'kspace')"),
])
def test_a_key_the_chosen_component_does_not_take_is_an_error(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(data)
    assert str(info.value) == message


@pytest.mark.parametrize(("data", "message"), [
    ({"data": {"window": [0, 80]}}, "window is set but normalization is 'auto'"),
    ({"data": {"normalization": "dtype", "percentiles": [1, 99]}}, "percentiles are set but normalization is 'dtype'"),
    ({"train": {"reshard_after_forward": False}}, "reshard_after_forward is set but shard is 'none'"),
])
def test_a_non_default_value_the_chosen_mode_does_not_read_is_an_error(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(data)
    # the defaults themselves (a saved config writes every key) are fine
    validate({"data": {"window": None, "percentiles": [0.5, 99.5]}, "train": {"reshard_after_forward": True}})


def test_an_unknown_component_name_suggests_the_registered_one() -> None:
    with pytest.raises(ConfigError, match=r"^config: process: unknown process 'flw' \(did you mean 'flow'\?\)$"):
        validate({"process": {"name": "flw"}})
    with pytest.raises(ConfigError, match=r"losses\.terms\.0: unknown loss term 'ssmi' \(did you mean 'ssim'\?\)"):
        validate({"losses": {"terms": [{"name": "ssmi"}]}})
    with pytest.raises(ConfigError, match=r"gate: unknown gate 'hrad' \(did you mean 'hard'\?\)"):
        validate({"losses": {"terms": [{"name": "l1", "gate": {"kind": "hrad", "t_max": 1}}]}})


def test_a_section_without_its_tag_means_the_default_component() -> None:
    terms = [{"name": "l1", "weight": {"value": 2}}]
    cfg = validate({"net": {"size": "small"}, "codec": {}, "losses": {"terms": terms}})
    assert (cfg.net.name, cfg.codec.name, cfg.process.name) == ("unet", "pixel", "flow")
    assert (cfg.losses.terms[0].weight.kind, cfg.losses.terms[0].gate.kind) == ("constant", "none")


def test_typo_inside_a_loss_term_and_a_process() -> None:
    with pytest.raises(ConfigError, match=r"losses\.terms\.0\.windw' \(did you mean 'losses\.terms\.0\.window'"):
        validate({"losses": {"terms": [{"name": "ssim", "windw": 7}]}})
    with pytest.raises(ConfigError, match=r"process\.kapa' \(did you mean 'process\.kappa'"):
        validate({"process": {"name": "resshift", "kapa": 1}})


def test_bad_values_are_one_line_errors() -> None:
    for data, key in [
        ({"codec": {"name": "wavelet", "layout": "lll"}}, "codec.layout"),
        ({"train": {"lr": -1}}, "train.lr"),
        ({"data": {"scale": 5}}, "data.scale"),
        ({"data": {"patch_size": 30, "scale": 4}}, "data"),
        ({"losses": {"terms": [{"name": "l1", "gate": {"kind": "hard"}}]}}, "losses.terms.0.gate"),
    ]:
        with pytest.raises(ConfigError) as info:
            validate(data)
        msg = str(info.value)
        assert key in msg and "\n" not in msg


def test_set_overrides_are_type_checked() -> None:
    cfg = load_config("demo", ["train.steps=7", "codec.layout=full", "losses.terms.0.weight.value=0.25"])
    assert cfg.train.steps == 7 and cfg.codec.layout == "full"
    assert cfg.losses.terms[0].weight.value == 0.25
    with pytest.raises(ConfigError, match="train.steps"):
        load_config("demo", ["train.steps=many"])
    with pytest.raises(ConfigError, match="did you mean 'train.steps'"):
        load_config("demo", ["train.stepz=3"])
    with pytest.raises(ConfigError, match="no item 5"):
        load_config("demo", ["losses.terms.5.weight.value=1"])


def test_unknown_preset_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'demo'"):
        load_config("dmeo")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(scalar)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_duplicate_term_labels_rejected() -> None:
    with pytest.raises(ConfigError, match="duplicate term"):
        validate({"losses": {"terms": [{"name": "l1"}, {"name": "l1"}]}})
    cfg = validate({"losses": {"terms": [{"name": "l1"}, {"name": "l1", "label": "l1_late"}]}})
    assert [t.key for t in cfg.losses.terms] == ["l1", "l1_late"]


def test_full_yaml_has_every_section() -> None:
    data = yaml.safe_load(Config().to_yaml())
    assert set(data) >= {"data", "codec", "process", "net", "losses", "train", "sample", "eval"}
