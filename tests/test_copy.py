"""python -m dtvg_dist.copy and package-data lookups from any working folder:
a copied recipe and launch config, a user recipe whose `base:` is packaged or
relative to it, a launch config's DeepSpeed JSON resolved outside the checkout."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from dtvg_dist import copy as copy_cmd
from dtvg_dist.orchestration.config import launch_config_path, load_recipe, recipe_path
from dtvg_dist.training.distributed import LaunchError, resolve_deepspeed_config_file
from dtvg_dist.utils import LAUNCH_CONFIGS_DIR


def test_copied_recipe_is_the_packaged_one_and_a_user_recipe_can_base_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nowhere near a checkout's recipes/
    assert copy_cmd.main(["recipe", "t5-base-dtvg-cb", "mine/"]) == 0
    copied = tmp_path / "mine" / "t5-base-dtvg-cb.yaml"
    assert copied.read_text() == recipe_path("t5-base-dtvg-cb").read_text()
    own = tmp_path / "mine" / "own.yaml"
    own.write_text("base: t5-base-dtvg-cb\noptim:\n  lr: 0.123\n")
    nested = tmp_path / "mine" / "nested.yaml"  # base: a path relative to this file, not to the cwd
    nested.write_text("base: own.yaml\nseed: 7\n")
    packaged = OmegaConf.to_container(load_recipe("t5-base-dtvg-cb"))
    mine = OmegaConf.to_container(load_recipe(str(nested)))
    assert mine["optim"]["lr"] == 0.123 and mine["seed"] == 7
    for key in ("optim", "seed", "recipe", "base"):
        packaged.pop(key), mine.pop(key)
    assert mine == packaged


def test_copied_deepspeed_launch_config_points_at_its_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert copy_cmd.main(["launch-config", "cpu_zero3_2proc", "cfg.yaml"]) == 0
    data = yaml.safe_load((tmp_path / "cfg.yaml").read_text())
    ds = data["deepspeed_config"]["deepspeed_config_file"]
    assert ds == str(tmp_path / "ds_zero3_cpu.json")
    assert (tmp_path / "ds_zero3_cpu.json").read_text() == (LAUNCH_CONFIGS_DIR / "ds_zero3_cpu.json").read_text()
    assert copy_cmd.main(["launch-config", "cpu_zero3_2proc", "cfg.yaml"]) == 2  # no silent overwrite
    assert "cfg.yaml exists; give --force" in capsys.readouterr().err
    assert copy_cmd.main(["launch-config", "no_such_config", "x.yaml"]) == 2


def test_packaged_deepspeed_json_resolves_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"ACCELERATE_DEEPSPEED_CONFIG_FILE": "launch_configs/ds_zero3_cpu.json"}
    assert resolve_deepspeed_config_file(env) == str(LAUNCH_CONFIGS_DIR / "ds_zero3_cpu.json")
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(LAUNCH_CONFIGS_DIR / "ds_zero3_cpu.json")
    with pytest.raises(LaunchError, match="'elsewhere/ds.json' does not exist"):
        resolve_deepspeed_config_file({"ACCELERATE_DEEPSPEED_CONFIG_FILE": "elsewhere/ds.json"})
    assert launch_config_path("cpu_ddp_2proc").is_absolute()
    assert launch_config_path("cpu_ddp_2proc.yaml") == launch_config_path("cpu_ddp_2proc")
