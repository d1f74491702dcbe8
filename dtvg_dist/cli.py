"""How every command ends: one place that maps the package's exceptions to exit
codes, so `train`, `predict`, `plan`, ... agree.

A `UserError` (bad recipe, missing file, unavailable backbone, bad bank or run
folder, bad command line) is one `error:` line on stderr and exit 2; a diverged
training run (`TrainingDiverged`) exit 3; a run stopped by a signal after its
checkpoint (`Preempted`) exit 75, requeue it. Anything else is a bug and keeps its
traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from dtvg_dist.errors import (
    EXIT_DIVERGED,
    EXIT_REQUEUE,
    EXIT_USER_ERROR,
    Preempted,
    TrainingDiverged,
    UserError,
)

T = TypeVar("T")


def exit_code(err: BaseException) -> int | None:
    """The exit code for an exception the commands expect, else None."""
    if isinstance(err, UserError):
        return EXIT_USER_ERROR
    if isinstance(err, TrainingDiverged):
        return EXIT_DIVERGED
    if isinstance(err, Preempted):
        return EXIT_REQUEUE
    return None


def run_job(job: Callable[[], T], also: tuple[type[BaseException], ...] = ()) -> tuple[int, T | None]:
    """Run `job`; returns (0, its result) or (exit code, None) after printing
    one `error:` line. `also`: further exception types this command treats
    as user errors (exit 2)."""
    try:
        return 0, job()
    except (UserError, TrainingDiverged, Preempted, *also) as err:
        code = exit_code(err) or EXIT_USER_ERROR
        print(f"{'stopped' if code == EXIT_REQUEUE else 'error'}: {err}", file=sys.stderr)
        return code, None


def command(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command's `main`: its user errors become exit 2, divergence 3."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> int:
        code, result = run_job(lambda: main(*args, **kwargs))
        return code if code else int(result or 0)

    return wrapper


def split_recipe_args(
    args: list[str], options: tuple[str, ...], flags: tuple[str, ...] = (),
    error: type[UserError] = UserError,
) -> tuple[str, dict[str, str], set[str], list[str]]:
    """`recipe=NAME [--option VALUE|--option=VALUE] [--flag] [key=value ...]`
    -> (NAME, option values, flags given, overrides), the command line of the
    recipe commands (train, plan, doctor). Exactly one recipe; unknown options and a
    missing value raise `error` naming them."""
    recipes = [a.split("=", 1)[1] for a in args if a.startswith("recipe=")]
    values: dict[str, str] = {}
    given: set[str] = set()
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in flags:
            given.add(a)
        elif a.startswith("-"):
            name, _, value = a.partition("=")
            if name not in options:
                raise error(f"unknown option {name!r}; see --help")
            if not value:
                i += 1
                if i >= len(args):
                    raise error(f"{name} needs a value")
                value = args[i]
            values[name] = value
        elif not a.startswith("recipe="):
            rest.append(a)
        i += 1
    if len(recipes) != 1:
        raise error("give exactly one recipe=NAME (see --help for the list)")
    return recipes[0], values, given, rest
