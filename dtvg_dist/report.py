"""`python -m dtvg_dist.report EXPERIMENT|FIGURE`: ours next to the paper's numbers, or an analysis figure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dtvg_dist import cli
from dtvg_dist.reporting import figures
from dtvg_dist.reporting.report import STD_CONVENTIONS, write_report

# the analysis figures this command draws besides the tables
COMMANDS = ("grouping", "bank", *figures.PAPER_FIGURES, "figure1", "figure8")


def _parameter_counts(recipe: str) -> dict[str, int | None]:
    """Figure 8's x axis: every registered method's module, built at `recipe`'s sizes."""
    from dtvg_dist.orchestration.config import load_recipe
    from dtvg_dist.orchestration.parameter_counts import method_parameter_counts

    return method_parameter_counts(load_recipe(recipe))


@cli.command
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:  # the analysis figures: dtvg_dist.reporting.figures
        return figures_main(argv)

    from dtvg_dist.reporting.paper_results import EXPERIMENTS

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
    from dtvg_dist.reporting.paper_results import VARIANTS

    for variant in variants or ():
        if variant not in VARIANTS:
            parser.error(f"--variants: {variant!r} is not one of {', '.join(VARIANTS)}")
    paths = write_report(args.experiment, args.runs_dir, args.out, seeds, with_plot=not args.no_plot,
                         variants=variants, std=args.std, lr_search=args.lr_search)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0




def _csv(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def figures_main(argv: list[str]) -> int:
    """`python -m dtvg_dist.report grouping|bank|figure1|figure7..figure11|figure8 ...`"""
    parser = argparse.ArgumentParser(prog="python -m dtvg_dist.report", description=figures.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    grouping = sub.add_parser("grouping", help="Figures 7/9 from DTVG run folders")
    grouping.add_argument("runs", nargs="+", help="stage-2 DTVG run folders (with grouping.jsonl)")
    grouping.add_argument("--labels", help="comma-separated column titles (default: the folders)")
    grouping.add_argument("--compare", nargs="*", default=[],
                          help="one baseline run (e.g. PT) per run, validation curves drawn alongside")
    grouping.add_argument("--out", default="runs/reports/grouping.png", help="the PNG (data: .json beside)")
    bank = sub.add_parser("bank", help="Figures 10/11 from TPV bank folders")
    bank.add_argument("banks", nargs="+", help="bank folders (one: Figure 10; one per seed: Figure 11)")
    bank.add_argument("--labels", help="comma-separated panel titles (default: the folders)")
    bank.add_argument("--tasks", help="comma-separated subset of the tasks (default: every entry)")
    bank.add_argument("--out", default="runs/reports/bank.png", help="the PNG (data: .json beside)")
    for name in figures.PAPER_FIGURES:
        paper = sub.add_parser(name, help=f"the paper's {name} from reproduce's runs")
        paper.add_argument("--runs-dir", default="runs")
        paper.add_argument("--seeds", help=f"comma-separated (default: {figures.PAPER_FIGURES[name]['seeds']})")
        paper.add_argument("--out", default=None, help="output folder (default: <runs-dir>/reports)")
    fig1 = sub.add_parser("figure1", help="Figure 1 from reproduce's figure1 runs")
    fig8 = sub.add_parser("figure8", help="Figure 8: GLUE average against trainable parameters")
    fig8.add_argument("--recipe", default="t5-base-dtvg-rte",
                      help="the sizes the modules are built at (default: t5-base-dtvg-rte)")
    for figure in (fig1, fig8):
        figure.add_argument("--runs-dir", default="runs")
        figure.add_argument("--seeds", help="comma-separated (figure1: the first; default: 42 / table2's)")
        figure.add_argument("--out", default=None, help="output folder (default: <runs-dir>/reports)")
        # reproduce prints its report line with these; a figure has no columns to pick
        figure.add_argument("--variants", help=argparse.SUPPRESS)
        figure.add_argument("--std", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.command in ("figure1", "figure8"):
            seeds = tuple(int(s) for s in _csv(args.seeds)) or None
            out = Path(args.out) if args.out else Path(args.runs_dir) / "reports"
            if args.command == "figure1":
                paths = figures.figure1(args.runs_dir, out / "figure1.png", seed=(seeds or (42,))[0])
            else:
                paths = figures.figure8(_parameter_counts(args.recipe), args.runs_dir,
                                        out / "figure8.png", seeds)
        elif args.command in figures.PAPER_FIGURES:
            seeds = tuple(int(s) for s in _csv(args.seeds)) or None
            paths = figures.paper_figure(args.command, args.runs_dir, seeds, args.out)
        elif args.command == "grouping":
            labels = _csv(args.labels) or list(args.runs)
            if len(labels) != len(args.runs) or (args.compare and len(args.compare) != len(args.runs)):
                parser.error("--labels and --compare need one entry per run")
            runs = {label: Path(p) for label, p in zip(labels, args.runs, strict=True)}
            compare = {label: Path(p) for label, p in zip(labels, args.compare, strict=False)}
            paths = figures.grouping_figure(runs, Path(args.out), compare=compare)
        else:
            labels = _csv(args.labels) or list(args.banks)
            if len(labels) != len(args.banks):
                parser.error("--labels needs one entry per bank")
            banks = {label: Path(p) for label, p in zip(labels, args.banks, strict=True)}
            paths = figures.bank_figure(banks, Path(args.out), tasks=_csv(args.tasks) or None)
    except (FileNotFoundError, ValueError) as err:  # BankError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
