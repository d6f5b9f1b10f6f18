"""Configuration loading, overrides and validation errors."""

from __future__ import annotations

import doctest

import pytest

import equitensor.train.config as config_module
from equitensor.train.config import BUILTIN_CONFIGS, ConfigError, config_from_dict, config_to_dict, load_config


def test_docstring_examples():
    result = doctest.testmod(config_module)
    assert result.attempted > 0 and result.failed == 0


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.lr=1e-3", "model.radial_MLP=[32, 32]", "data.val=null", "train.ema=false",
                             "train.max_steps=7", "data.e0s={8: -2.0}"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.model.radial_MLP == [32, 32]
    assert cfg.data.val is None and cfg.train.ema is False and cfg.train.max_steps == 7
    assert cfg.data.e0s == {8: -2.0}


@pytest.mark.parametrize("name", BUILTIN_CONFIGS)
def test_packaged_configs_load(name):
    cfg = load_config(name)
    assert cfg.source.endswith(f"{name}.yaml")
    assert config_from_dict(config_to_dict(cfg)) == config_from_dict(config_to_dict(cfg))


def test_unknown_key_suggests_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown config key 'optim.learning_rat'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"--set optim\.lrr=0\.1: unknown config key 'optim\.lrr'; did you mean 'optim\.lr'"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"did you mean 'train\.batch_size'"):
        load_config(None, ["train.batchsize=4"])
    with pytest.raises(ConfigError, match=r"did you mean 'model\.r_max'"):
        load_config(None, ["r_max=4"])
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; did you mean 'train'"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=two", r"train\.epochs must be an integer, got 'two'"),
        ("optim.lr=-1", r"optim\.lr must be > 0"),
        ("optim.scheduler=step", r"optim\.scheduler must be one of plateau, cosine, constant; got 'step'"),
        ("train.dtype=float16", r"train\.dtype must be one of float32, float64"),
        ("train.ema=maybe", r"train\.ema must be true or false"),
        ("data.val_fraction=1.5", r"data\.val_fraction must be in \[0, 1\)"),
        ("data.e0s=average", r"data\.e0s must be 'fit', 'zero' or a mapping"),
        ("model.avg_num_neighbors=-3", r"model\.avg_num_neighbors must be 'auto' or a positive number"),
        ("optim.lr", r"expected KEY=VALUE"),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_config_file_and_relative_paths(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")
    path = tmp_path / "sub" / "c.yaml"
    path.parent.mkdir()
    path.write_text("data:\n  train: data/train.xyz\n  val: /abs/val.xyz\n")
    cfg = load_config(path)
    assert cfg.data.train == str(tmp_path / "sub" / "data" / "train.xyz")
    assert cfg.data.val == "/abs/val.xyz"
