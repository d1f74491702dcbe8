"""`python -m dtvg_dist.dataset check|download` on the fixture hub: the preflight
passes, fails naming task, file and row, and the offline mirror round-trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dtvg_dist.data import DataSettings, prepare_splits
from dtvg_dist.data.manifest import sha256_file
from dtvg_dist.dataset import main
from dtvg_dist.tasks import DataError, get_task


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def weightless_t5(tmp_path_factory, tiny_t5_config, toy_words) -> Path:
    """A model folder with only a config and a tokenizer: `check` must not need weights."""
    from transformers import AutoConfig

    from dtvg_dist.model.toy_tokenizer import build_toy_tokenizer

    folder = tmp_path_factory.mktemp("weightless-t5")
    cfg = dict(tiny_t5_config)
    AutoConfig.for_model(cfg.pop("model_type"), **cfg).save_pretrained(str(folder))
    build_toy_tokenizer(toy_words, str(folder))
    return folder


def table_row(out: str, task: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.split()[:1] == [task])
    return line.split()


def test_check_passes_and_prints_the_table(fake_hub, capsys, weightless_t5):
    code, out, err = run(capsys, "check", "tasks=rte,qqp,record,web_nlg", f"tokenizer={weightless_t5}")
    assert code == 0, err
    assert table_row(out, "rte")[:5] == ["rte", "ok", "6", "2", "3"]
    assert table_row(out, "qqp")[:5] == ["qqp", "ok", "8", "1000", "4"]
    assert table_row(out, "record")[:5] == ["record", "ok", "2", "1000", "3"]
    # Label distribution of the training split; token lengths p50/p95/max; truncation counts.
    assert "0:50%" in table_row(out, "rte")[5] and table_row(out, "rte")[6] == "1:50%"
    src_tokens = table_row(out, "rte")[7].split("/")
    assert len(src_tokens) == 3 and int(src_tokens[0]) <= int(src_tokens[1]) <= int(src_tokens[2])
    assert "rte: hub nyu-mll/glue@main" in out and "halved into validation/test" in out
    assert "web_nlg: hub GEM/web_nlg@refs/convert/parquet" in out


def test_check_fails_naming_task_file_row_and_reason(fake_hub, hub_root, capsys, monkeypatch, tmp_path):
    import huggingface_hub
    from hub_fixtures import fake_snapshot

    broken = tmp_path / "hub"
    shutil.copytree(hub_root / "nyu-mll", broken / "nyu-mll")
    path = broken / "nyu-mll/glue/main/rte/validation-00000-of-00001.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[2]["label"] = 7
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot(broken, tmp_path / "cache"))
    code, out, err = run(capsys, "check", "tasks=rte,cola")
    assert code == 1
    assert table_row(out, "rte")[1] == "FAILED" and table_row(out, "cola")[1] == "ok"
    assert "task 'rte'" in err and "rte/validation-00000-of-00001.parquet: row 3" in err
    assert "column 'label': label 7 out of range 0..1" in err


def test_check_with_a_recipe_resolves_its_tokenizer_and_config(fake_hub, capsys, weightless_t5):
    assert not list(weightless_t5.glob("*.safetensors"))
    code, out, err = run(
        capsys, "check", "recipe=t5-base-dtvg-rte", f"backbone.name_or_path={weightless_t5}",
        "stage1.tasks=[rte]", "source_tasks=[mnli]",
    )
    assert code == 0, err
    assert f"backbone config: {weightless_t5} from local folder" in out and "(seq2seq)" in out
    assert {table_row(out, t)[1] for t in ("rte", "mnli")} == {"ok"}


def test_check_recipe_with_an_uncached_hub_backbone_is_one_clear_error(fake_hub, capsys):
    code, out, err = run(capsys, "check", "recipe=t5-base-dtvg-rte")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    for needle in ("backbone.name_or_path='t5-base'", "not in the local hub cache", "offline",
                   "huggingface-cli download t5-base --local-dir DIR", "backbone.name_or_path=DIR"):
        assert needle in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check"], "give recipe=NAME or tasks=a,b"),
        (["download", "tasks=rte"], "download needs --to DIR"),
        (["check", "tasks=rtee"], "did you mean 'rte'"),
        (["check", "tasks=rte", "optim.lr=1"], "only data.* keys"),
        (["check", "tasks=rte", "data.k_shot_sampling=balanced"], "data.k_shot_sampling must be one of"),
        (["fetch"], "give a command: check or download"),
    ],
)
def test_usage_errors_exit_2_with_the_reason(capsys, args, message):
    code, _, err = run(capsys, *args)
    assert code == 2 and message in err


ROUND_TRIP = ("rte", "mnli", "qqp", "squad", "record", "cb", "web_nlg")


def test_download_then_local_dir_gives_identical_examples(fake_hub, capsys, monkeypatch, tmp_path):
    import huggingface_hub

    mirror = tmp_path / "mirror"
    code, out, err = run(capsys, "download", "--to", str(mirror), f"tasks={','.join(ROUND_TRIP)}")
    assert code == 0, err
    manifest = json.loads((mirror / "manifest.json").read_text())
    assert set(manifest["tasks"]) == set(ROUND_TRIP)
    cb = manifest["tasks"]["cb"]
    assert (cb["hub_id"], cb["revision"], len(cb["commit"])) == ("aps/super_glue", "refs/convert/parquet", 40)
    for rel, facts in cb["files"].items():
        assert sha256_file(mirror / rel) == facts["sha256"]
        assert pq.ParquetFile(mirror / rel).metadata.num_rows == facts["rows"]
    assert {f["split"] for f in manifest["tasks"]["mnli"]["files"].values()} == {
        "train", "validation_matched", "validation_mismatched"}

    from_hub = {t: prepare_splits(get_task(t), DataSettings(), seed=3) for t in ROUND_TRIP}

    def no_network(*args, **kwargs):
        raise AssertionError("the hub must not be used when data.local_dir has the task")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    for name in ROUND_TRIP:
        task = get_task(name)
        local = prepare_splits(task, DataSettings(local_dir=str(mirror)), seed=3)
        assert local.source.kind == "local" and "mirror of" in local.source.where
        for split, rows in from_hub[name].splits.items():
            assert [task.format(r) for r in local.splits[split]] == [task.format(r) for r in rows]
            assert [task.reference(r) for r in local.splits[split]] == [task.reference(r) for r in rows]


def test_loading_a_mirror_names_a_changed_or_unlisted_file(fake_hub, capsys, tmp_path):
    mirror = tmp_path / "mirror"
    assert run(capsys, "download", f"--to={mirror}", "tasks=rte")[0] == 0
    train = mirror / "rte" / "train-00000-of-00001.parquet"
    table = pq.read_table(train)
    pq.write_table(table.slice(0, 3), train)  # truncated after the download
    with pytest.raises(DataError, match=r"'rte': .*train-00000-of-00001.parquet changed since it was downloaded"):
        prepare_splits(get_task("rte"), DataSettings(local_dir=str(mirror)))
    assert run(capsys, "download", f"--to={mirror}", "tasks=rte")[0] == 0  # a fresh copy is accepted
    prepare_splits(get_task("rte"), DataSettings(local_dir=str(mirror)))
    pq.write_table(table, mirror / "rte" / "train-extra.parquet")
    with pytest.raises(DataError, match=r"train-extra.parquet is not in .*manifest.json"):
        prepare_splits(get_task("rte"), DataSettings(local_dir=str(mirror)))


def test_download_reports_a_failing_task_and_keeps_the_others(fake_hub, capsys, tmp_path):
    from dtvg_dist.tasks import register_task, unregister_task

    register_task(get_task("rte").__class__(**{**get_task("rte").__dict__, "name": "gone", "hub_id": "nobody/gone"}))
    try:
        code, out, err = run(capsys, "download", "--to", str(tmp_path / "m"), "tasks=rte,gone")
    finally:
        unregister_task("gone")
    assert code == 1 and "wrote 1 task(s)" in out
    assert "task 'gone'" in err and "nobody/gone" in err
    assert set(json.loads((tmp_path / "m" / "manifest.json").read_text())["tasks"]) == {"rte"}


def test_help_lists_both_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "check" in out and "download --to DIR" in out


@pytest.mark.filterwarnings("ignore:'dtvg_dist.dataset' found in sys.modules:RuntimeWarning")  # imported above
def test_module_entry_point_dispatches_to_the_cli(monkeypatch, capsys):
    """`python -m dtvg_dist.dataset ...` runs dtvg_dist.dataset.main."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["dtvg_dist.dataset", "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("dtvg_dist.dataset", run_name="__main__")
    assert done.value.code == 0 and "usage: python -m dtvg_dist.dataset check" in capsys.readouterr().out
