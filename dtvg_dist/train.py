"""Command line: python -m dtvg_dist.train recipe=NAME [key.sub=value ...]

Also under `accelerate launch [--config_file launch_configs/X.yaml] -m
dtvg_dist.train recipe=NAME ...`. `--help` lists the recipes.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import OmegaConf

from dtvg_dist import cli
from dtvg_dist.orchestration.config import (
    RecipeError,
    list_launch_configs,
    list_recipes,
    load_recipe,
    recipe_path,
)
from dtvg_dist.utils import LAUNCH_CONFIGS_DIR, RECIPES_DIR

USAGE = """usage: python -m dtvg_dist.train recipe=NAME|FILE.yaml [key=value ...]
       accelerate launch [--config_file CONFIG] -m dtvg_dist.train recipe=NAME ...

Trains DTVG soft prompts. stage=1|2|all, method=pt|spot|tpv|dtvg,
grouping.rule=greedy|first-drop|prefix-argmax|positive|exhaustive-kc|exhaustive-kc-nonempty|all|none,
grouping.fixed=true|false, and any recipe key as a.b=value (e.g. optim.lr=0.1 data.local_dir=/data).
  --print-config   print the resolved recipe and exit
Recipes and launch configs ship inside the package and resolve from any folder;
`python -m dtvg_dist.plan` prints the launch line with the config's absolute
path, `python -m dtvg_dist.copy recipe|launch-config NAME DEST` copies one out
to edit (a recipe file of your own may say `base: NAME` of a packaged recipe).
"""


def _recipe_listing() -> str:
    lines = [f"recipes (packaged in {RECIPES_DIR}):"]
    for name in list_recipes():
        try:
            desc = OmegaConf.load(recipe_path(name)).get("description", "")
        except Exception:  # noqa: BLE001 - a broken recipe must not break --help
            desc = "(unreadable)"
        lines.append(f"  {name:<34} {desc}")
    lines.append(f"launch configs (packaged in {LAUNCH_CONFIGS_DIR}): " + ", ".join(list_launch_configs()))
    return "\n".join(lines)


def _setup_logging(is_main: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@cli.command
def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "-h" in args or "--help" in args:
        print(USAGE + "\n" + _recipe_listing())
        return 0
    recipe, _, flags, overrides = cli.split_recipe_args(args, (), flags=("--print-config",), error=RecipeError)
    cfg = load_recipe(recipe, overrides)
    if "--print-config" in flags:
        print(OmegaConf.to_yaml(cfg))
        return 0
    _setup_logging(int(os.environ.get("RANK", "0")) == 0)
    from dtvg_dist.orchestration.pipeline import Pipeline, output_dir
    from dtvg_dist.reporting.report import summary_table

    pipeline = Pipeline(cfg)
    pipeline.run()
    if pipeline.acc.is_main_process and cfg.stage in ("2", "all"):
        print(summary_table(output_dir(cfg), cfg.target_task))
    return 0

if __name__ == "__main__":
    sys.exit(main())
