"""dtvg_dist.plan: the fits / does-not-fit switch, the recommendation,
the traffic per GPU, the launch lines and the CLI's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dtvg_dist import plan
from dtvg_dist.costs import GIB, ModelShape, find_model_config
from dtvg_dist.plan import ModeEstimate, choose, launch_check, make_plan, plan_launch

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------- modes and choices
def mode(key: str, fits: bool, sends: int = 10, available: bool = True) -> ModeEstimate:
    names = {"ddp": "DDP bf16", "ddp8": "DDP 8-bit", "zero3": "ZeRO-3 bf16"}
    return ModeEstimate(key=key, name=names[key], available=available, fits=fits, sends=sends,
                        weights=GIB)


@pytest.mark.parametrize(
    ("fits", "world", "expected"),
    [
        ({"ddp": True, "ddp8": True, "zero3": True}, 8, "ddp"),
        ({"ddp": False, "ddp8": True, "zero3": True}, 8, "zero3"),  # keeps the bf16 backbone
        ({"ddp": False, "ddp8": True, "zero3": False}, 8, "ddp8"),
        ({"ddp": False, "ddp8": True, "zero3": True}, 1, "ddp8"),  # nothing to shard on one GPU
        ({"ddp": False, "ddp8": False, "zero3": True}, 1, None),
        ({"ddp": False, "ddp8": False, "zero3": False}, 4, None),
    ],
)
def test_recommendation_order(fits: dict, world: int, expected: str | None) -> None:
    key, why = choose([mode(k, f) for k, f in fits.items()], world, 10 * GIB)
    assert key == expected
    assert ("no launch mode fits" in why) == (expected is None)


def test_unavailable_mode_is_never_recommended() -> None:
    modes = [mode("ddp", False), mode("ddp8", True, available=False), mode("zero3", False)]
    assert choose(modes, 1, GIB)[0] is None


def test_fits_switches_at_the_computed_peak() -> None:
    first = make_plan("tiny-llama", gpus=1, gpu_memory_gib=1000.0)
    need = first.mode("ddp").total / GIB
    above = make_plan("tiny-llama", gpus=1, gpu_memory_gib=need * (1 + 1e-9))
    below = make_plan("tiny-llama", gpus=1, gpu_memory_gib=need * (1 - 1e-9))
    assert above.mode("ddp").fits and above.recommended == "ddp"
    assert not below.mode("ddp").fits and below.recommended is None
    assert not below.mode("ddp8").available  # a config-built backbone cannot load in 8 bits
    assert any("gradient_checkpointing" in n for n in below.launch_notes)


def test_peak_is_the_sum_of_its_parts() -> None:
    p = make_plan("tiny-llama", gpus=2, gpu_memory_gib=10.0)
    for m in p.modes:
        assert m.total == (m.weights + m.gathered + m.prompt + m.reserve
                           + max(m.activations, m.evaluation))


def test_llama3_8b_recommendations_follow_memory() -> None:
    """Llama-3-8B (known shape, global batch 2): 8 processes cannot split the
    batch, so the plan at 8 GPUs recommends nothing and plan_launch picks one
    GPU (a bf16 replica fits 80 GiB); on 16 GiB cards 8-bit DDP with 2 GPUs;
    ZeRO-3 once it fits (4 GPUs), which needs a batch of 4."""
    roomy = make_plan("llama3-8b-cb", gpus=8, gpu_memory_gib=80)
    assert roomy.recommended is None and "optim.batch_size=2" in roomy.why and "8 processes" in roomy.why
    one = plan_launch("llama3-8b-cb", gpus=8, gpu_memory_gib=80)
    assert (one.recommended, one.world) == ("ddp", 1)
    assert "single_gpu.yaml -m dtvg_dist.train recipe=llama3-8b-cb" in one.mode("ddp").launch
    assert any("packs the other 7 GPU(s)" in n for n in one.launch_notes)
    assert any("With optim.batch_size=8 all 8 would train" in n for n in one.launch_notes)
    two = make_plan("llama3-8b-cb", gpus=2, gpu_memory_gib=16)
    assert (two.mode("ddp").fits, two.mode("zero3").fits, two.recommended) == (False, False, "ddp8")
    assert two.mode("ddp8").launch.endswith("backbone.load_in_8bit=true")
    four = make_plan("llama3-8b-cb", gpus=4, gpu_memory_gib=16, overrides=["optim.batch_size=4"])
    assert four.recommended == "zero3"
    assert "multi_gpu_zero3.yaml --num_processes 4" in four.mode("zero3").launch
    small = plan_launch("llama3-8b-cb", gpus=4, gpu_memory_gib=16)
    assert small.recommended == "ddp8" and small.world <= 2


def test_the_trainer_refuses_fewer_examples_than_processes_with_both_numbers() -> None:
    from dtvg_dist.cli import exit_code
    from dtvg_dist.training.distributed import LaunchError, check_launch

    check_launch(2, 2)
    with pytest.raises(LaunchError) as err:
        check_launch(1, 2)
    assert "optim.batch_size=1 is smaller than the 2 processes" in str(err.value)
    assert "\n" not in str(err.value) and exit_code(err.value) == 2


@pytest.mark.slow
def test_every_paper_recipe_launch_passes_the_trainers_checks() -> None:
    """T5-base and Llama-3.2-1B/3B, Llama-3-8B: one recipe per distinct
    (backbone, batch, stage, method) from the recipes folder, on 8x80, 8x40,
    8x24 and 1x16 GiB: plan's recommended launch passes the trainer's own
    launch checks (no weights load) and names a launch config that exists."""
    from dtvg_dist.orchestration.config import list_recipes, load_recipe

    paper = [n for n in list_recipes() if n.startswith(("t5-base", "llama3.2-1b", "llama3.2-3b", "llama3-8b"))]
    assert {n.split("-")[0] for n in paper} >= {"t5", "llama3.2", "llama3"}
    seen: dict[tuple, str] = {}
    for name in paper:
        c = load_recipe(name)
        key = (c.backbone.name_or_path, int(c.optim.batch_size), str(c.stage), str(c.method))
        seen.setdefault(key, name)
    assert len({k[0] for k in seen}) == 4
    for name in seen.values():
        for gpus, memory in [(8, 80), (8, 40), (8, 24), (1, 16)]:
            p = plan_launch(name, gpus, memory)
            if p.recommended is None:  # nothing fits (8B stage 1 on one 16 GiB card): no line at all
                assert (gpus, memory) == (1, 16) and "no launch mode fits" in p.why, (name, p.why)
                continue
            launch_check(p)
            batch = int(p.workload["global_batch"])
            assert batch % p.world == 0 and p.world <= gpus
            config = p.mode(p.recommended).launch.split()[3]
            assert Path(config).is_absolute() and Path(config).is_file()


def test_reproduce_auto_asks_the_same_planner() -> None:
    from dtvg_dist.reproduce import planned_launch

    launch = planned_launch("llama3-8b-cb", [], None, 80.0, 8)
    assert launch.gpus == 1 and launch.mode == "ddp"
    plan = plan_launch("llama3.2-3b-cb", 8, 80)
    assert planned_launch("llama3.2-3b-cb", [], None, 80.0, 8).gpus == plan.world


def test_traffic_per_gpu_by_hand() -> None:
    """DDP: a ring all-reduce of the fp32 prompt gradients; ZeRO-3: the
    partitioned backbone (bf16) gathered in forward and backward every
    micro-step, plus the prompt's gradient reduce-scatter and update."""
    world, accum = 4, 2
    p = make_plan("tiny-llama", gpus=world, gpu_memory_gib=10.0, overrides=[f"optim.grad_accum={accum}"])
    shape = ModelShape.from_config(make_cfg_backbone("tiny-llama"))
    r, d, n = 8, shape.hidden, 4
    trainable = r * d + r + n * r  # DTVG: target TPV, alpha_t, alpha_s
    frac = (world - 1) / world
    assert p.mode("ddp").sends == int(2 * frac * trainable * 4)
    threshold = max(10 * d, r * d)
    persistent = sum(n_ for _, n_, _ in shape.tensors() if n_ <= threshold)
    gathers = 2 * accum * frac * (shape.parameters() - persistent) * 2
    grads = accum * frac * trainable * 2 + frac * trainable * 2
    assert p.mode("zero3").sends == int(gathers + grads)


def make_cfg_backbone(recipe: str) -> dict:
    from dtvg_dist.orchestration.config import load_recipe

    return find_model_config(load_recipe(recipe).backbone)[0]


def test_batch_is_split_over_ranks_and_nodes() -> None:
    p = make_plan("llama3.2-1b-stage1", gpus=4, gpu_memory_gib=80, nodes=2)
    assert p.workload["global_batch"] == 16 and p.workload["batch_per_gpu"] == 2
    one = make_plan("llama3.2-1b-stage1", gpus=1, gpu_memory_gib=80)
    assert one.mode("ddp").activations > p.mode("ddp").activations


def test_a_recipe_without_an_offline_config_is_an_error(tmp_path: Path, monkeypatch, capsys) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert plan.main(["recipe=t5-small-dtvg-boolq", "--gpus", "1", "--gpu-memory", "24"]) == 2
    assert "error: backbone.name_or_path='t5-small'" in capsys.readouterr().err


def test_launch_lines_are_accepted_by_accelerate() -> None:
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    cases = [(1, 1), (8, 1), (8, 2)]
    for gpus, nodes in cases:
        p = make_plan("llama3.2-1b-rte", gpus=gpus, gpu_memory_gib=80, nodes=nodes,
                      overrides=["optim.lr=0.01"])
        for m in p.modes:
            argv = m.launch.replace("$MACHINE_RANK", "1").replace("$MAIN_IP", "10.0.0.1").split()
            assert argv[:2] == ["accelerate", "launch"]
            args = parser.parse_args(argv[2:])
            assert (REPO / args.config_file).is_file()
            cwd = os.getcwd()
            os.chdir(REPO)
            try:
                args, _, _ = _validate_launch_command(args)
            finally:
                os.chdir(cwd)
            assert args.num_processes == gpus * nodes and args.num_machines == nodes
            assert args.use_deepspeed == (m.key == "zero3")
            assert args.module and args.training_script == "dtvg_dist.train"
            assert args.training_script_args[:2] == ["recipe=llama3.2-1b-rte", "optim.lr=0.01"]


# ------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["recipe=tiny-llama", "--gpu-memory", "10"], "--gpus is required"),
        (["recipe=tiny-llama", "--gpus", "two", "--gpu-memory", "10"], "--gpus='two' is not a whole number"),
        (["recipe=tiny-llama", "--gpus", "1", "--gpu-memory", "0"], "--gpu-memory must be a positive"),
        (["recipe=tiny-llama", "--gpus", "0", "--gpu-memory", "8"], "--gpus and --nodes must be at least 1"),
        (["recipe=tiny-llama", "--gpus", "1", "--gpu-memory", "8", "--fast"], "unknown option '--fast'"),
        (["--gpus", "1", "--gpu-memory", "8"], "give exactly one recipe=NAME"),
        (["recipe=no-such-recipe", "--gpus", "1", "--gpu-memory", "8"], "recipe 'no-such-recipe' not found"),
        (["recipe=tiny-llama", "--gpus", "1", "--gpu-memory", "8", "optim.batchsize=4"],
         "closest valid key is 'optim.batch_size'"),
        (["recipe=tiny-llama", "--gpus", "1", "--gpu-memory"], "--gpu-memory needs a value"),
    ],
)
def test_cli_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert plan.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_cli_json_and_equals_form(capsys: pytest.CaptureFixture) -> None:
    assert plan.main(["recipe=tiny-llama", "--gpus=2", "--gpu-memory=4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # one replica fits: one GPU of the two asked for
    assert (data["world"], data["asked_gpus"], data["recommended"]) == (1, 2, "ddp")
    assert [m["key"] for m in data["modes"]] == ["ddp", "ddp8", "zero3"]


@pytest.mark.slow
def test_cli_module_prints_the_plan(tmp_path: Path) -> None:
    """From a folder outside the checkout: the launch config path is absolute and exists."""
    proc = subprocess.run(
        [sys.executable, "-m", "dtvg_dist.plan", "recipe=llama3-8b-cb", "--gpus", "8",
         "--gpu-memory", "80"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "recommended: DDP bf16" in proc.stdout
    config = REPO / "dtvg_dist" / "launch_configs" / "single_gpu.yaml"
    assert f"accelerate launch --config_file {config} -m dtvg_dist.train recipe=llama3-8b-cb" in proc.stdout


@pytest.mark.parametrize("method", ["attempt", "dept"])
def test_method_prompt_sizes_reach_memory_and_traffic(method: str) -> None:
    """The planner asks the method: ATTEMPT trains the target prompt plus the
    attention module (sources frozen, as buffers); DePT a shorter prompt plus A
    and B, and its inputs are shorter by r - m positions."""
    world = 2
    extra = ["dept.prompt_length=4", "dept.rank=2", "dept.max_length=64"] if method == "dept" else []
    p = make_plan("tiny-llama", gpus=world, gpu_memory_gib=10.0,
                  overrides=["stage=2", f"method={method}", *extra])
    d, r = 32, 8
    # ATTEMPT: its layer norm frozen, as AkariAsai/ATTEMPT attempt/utils/utils.py trains it
    trainable = r * d + 2 * 100 * d if method == "attempt" else 4 * d + 64 * 2 + 2 * d
    assert p.workload["prompt_trainable"] == trainable
    assert p.mode("ddp").sends == int(2 * (world - 1) / world * trainable * 4)
    dtvg = make_plan("tiny-llama", gpus=world, gpu_memory_gib=10.0, overrides=["stage=2"])
    if method == "dept":
        assert p.mode("ddp").activations < dtvg.mode("ddp").activations  # 4 prompt rows, not 8


# ==== suite: MPT's prompt sizes (formerly tests/test_mpt_plan.py) ====
# The launch planner sizes MPT's prompt: target adaptation trains r*d + r + d
# (77,668 for T5-base, r = 100), source training r*d + n(r + d) with the n
# teacher prompts frozen; the DDP traffic follows the trainable count.
def _mpt_plan(capsys, *args: str) -> dict:
    assert plan.main(["recipe=t5-base-dtvg-rte", "method=mpt", "--gpus", "2", "--gpu-memory", "40",
                      "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_planner_mpt_prompt_sizes(capsys):
    target = _mpt_plan(capsys, "stage=2")
    assert target["workload"]["prompt_trainable"] == 100 * 768 + 100 + 768
    source = _mpt_plan(capsys, "stage=pre")
    n = 6  # Table 2's sources
    assert source["workload"]["prompt_trainable"] == 100 * 768 + n * (100 + 768)
    assert source["workload"]["stage"] == "pre-stage (mpt)"
    pt = _mpt_plan(capsys, "stage=2", "method=pt")
    ddp = {p["workload"]["stage"]: next(m for m in p["modes"] if m["key"] == "ddp") for p in (target, pt)}
    assert json.dumps(ddp["stage 2 (mpt)"]) != json.dumps(ddp["stage 2 (pt)"])
# ==== end suite ====
