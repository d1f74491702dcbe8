"""The launch planner sizes MPT's prompt: target adaptation trains
r*d + r + d (77,668 for T5-base, r = 100), source training r*d + n(r + d)
with the n teacher prompts frozen; the DDP traffic follows the trainable count."""

from __future__ import annotations

import json

from dtvg_dist.plan import main


def _plan(capsys, *args: str) -> dict:
    assert main(["recipe=t5-base-dtvg-rte", "method=mpt", "--gpus", "2", "--gpu-memory", "40",
                 "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_planner_mpt_prompt_sizes(capsys):
    target = _plan(capsys, "stage=2")
    assert target["workload"]["prompt_trainable"] == 100 * 768 + 100 + 768
    source = _plan(capsys, "stage=pre")
    n = 6  # Table 2's sources
    assert source["workload"]["prompt_trainable"] == 100 * 768 + n * (100 + 768)
    assert source["workload"]["stage"] == "pre-stage (mpt)"
    pt = _plan(capsys, "stage=2", "method=pt")
    ddp = {p["workload"]["stage"]: next(m for m in p["modes"] if m["key"] == "ddp") for p in (target, pt)}
    assert json.dumps(ddp["stage 2 (mpt)"]) != json.dumps(ddp["stage 2 (pt)"])
