"""One place maps errors to exit codes: every exception type the package
defines for a user's mistake derives from UserError, and every command ends a
UserError with one `error:` line and exit 2, a diverged run with exit 3."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import dtvg_dist
from dtvg_dist import cli
from dtvg_dist.errors import (
    EXIT_DIVERGED,
    EXIT_USER_ERROR,
    BackboneUnavailable,
    BankError,
    DataError,
    RecipeError,
    TrainingDiverged,
    UsageError,
    UserError,
)

COMMANDS = ("train", "demo", "reproduce", "report", "predict", "export", "plan", "dataset")
# Exceptions that are not the user's to fix: they keep their own exit code or traceback.
NOT_USER_ERRORS = {"TrainingDiverged", "Preempted", "InjectedFault"}


def _package_exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(dtvg_dist.__path__, "dtvg_dist."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__.startswith("dtvg_dist"):
                found[name] = obj
    return found


def test_every_package_exception_is_a_user_error_or_named_here() -> None:
    found = _package_exceptions()
    assert {"RecipeError", "DataError", "BackboneUnavailable", "BankError", "RunDirError", "PlanError",
            "UsageError", "LaunchError"} <= set(found)
    for name, exc in found.items():
        assert name in NOT_USER_ERRORS or issubclass(exc, UserError), f"{exc.__module__}.{name}"


@pytest.mark.parametrize("exc", [RecipeError, DataError, BackboneUnavailable, BankError, UsageError])
def test_user_errors_exit_2_with_one_line(exc: type[Exception], capsys: pytest.CaptureFixture) -> None:
    @cli.command
    def main() -> int:
        raise exc("backbone.name_or_path='x': not here")

    assert main() == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: backbone.name_or_path='x': not here\n"


def test_divergence_exits_3_and_bugs_keep_their_traceback(capsys: pytest.CaptureFixture) -> None:
    @cli.command
    def diverged() -> int:
        raise TrainingDiverged("loss is nan at step 3")

    assert diverged() == EXIT_DIVERGED
    assert "loss is nan" in capsys.readouterr().err

    @cli.command
    def bug() -> int:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        bug()


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_goes_through_the_helper(name: str) -> None:
    main = importlib.import_module(f"dtvg_dist.{name}").main
    assert getattr(main, "__wrapped__", None) is not None, f"dtvg_dist.{name}.main is not @cli.command"


def test_predict_names_an_unavailable_backbone(tiny_runs, tmp_path, capsys, monkeypatch) -> None:
    """An uncached hub backbone with the hub offline is exit 2 and one line, not a traceback."""
    from dtvg_dist.predict import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    source = tmp_path / "rows.jsonl"
    source.write_text('{"sentence": "a good day"}\n')
    code = main([str(tiny_runs["tiny-t5"]), "--input", str(source), "backbone.config=null",
                 "backbone.tokenizer=null", "backbone.name_or_path=nobody/no-such-model"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "nobody/no-such-model" in err and "not in the local hub cache" in err  # BackboneUnavailable
