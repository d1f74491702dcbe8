"""`python -m dtvg_dist.report EXPERIMENT|FIGURE`: ours next to the paper's numbers, or an analysis figure."""

from __future__ import annotations

from dtvg_dist import cli
from dtvg_dist.analysis.report import STD_CONVENTIONS, write_report


def _parameter_counts(recipe: str) -> dict[str, int | None]:
    """Figure 8's x axis: every registered method's module, built at `recipe`'s sizes."""
    from dtvg_dist.config import load_recipe
    from dtvg_dist.parameter_counts import method_parameter_counts

    return method_parameter_counts(load_recipe(recipe))


@cli.command
def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from dtvg_dist.analysis.figures import COMMANDS

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:  # the analysis figures: dtvg_dist.analysis.figures
        from dtvg_dist.analysis.figures import main as figures_main

        return figures_main(argv, parameter_counts=_parameter_counts)

    from dtvg_dist.analysis.paper_results import EXPERIMENTS

    parser = argparse.ArgumentParser(
        prog="python -m dtvg_dist.report",
        description="Ours (mean ± std over seeds) next to the paper's numbers, for one experiment.",
        epilog="The analysis figures (PNG + JSON): python -m dtvg_dist.report "
               f"{'|'.join(COMMANDS)} --help",
    )
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--runs-dir", default="runs", help="where the runs are (default: runs)")
    parser.add_argument("--out", default=None, help="output folder (default: <runs-dir>/reports)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the experiment's)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--variants", default=None,
                        help="comma-separated columns (default: the experiment's)")
    parser.add_argument("--std", choices=STD_CONVENTIONS, default="sample",
                        help="± of ours: sample (n-1, default) or population (n, the paper's fit)")
    parser.add_argument("--lr-search", action="store_true",
                        help="the dtvg column is the C.7 learning-rate pair chosen on validation")
    args = parser.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip()) if args.variants else None
    from dtvg_dist.analysis.paper_results import VARIANTS

    for variant in variants or ():
        if variant not in VARIANTS:
            parser.error(f"--variants: {variant!r} is not one of {', '.join(VARIANTS)}")
    paths = write_report(args.experiment, args.runs_dir, args.out, seeds, with_plot=not args.no_plot,
                         variants=variants, std=args.std, lr_search=args.lr_search)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
