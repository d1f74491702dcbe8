"""The grid gives MPT one source-training job (stage=pre) per seed and bank,
which every MPT target of that seed waits on; it is done once the shared
prompt file exists."""

from __future__ import annotations

from pathlib import Path

from dtvg_dist.grid.build import experiment_jobs
from dtvg_dist.reporting.paper_results import EXPERIMENTS


def test_table2_mpt_has_one_pre_stage_job_per_seed(tmp_path):
    recipes = ("t5-base-dtvg-rte", "t5-base-dtvg-cb")
    jobs = experiment_jobs(EXPERIMENTS["table2"], seeds=(22, 32), variants=("dtvg", "mpt"),
                           overrides=[], runs_dir=tmp_path, recipes=recipes)
    order = {job.name: i for i, job in enumerate(jobs)}
    pre = [j for j in jobs if "stage=pre" in j.args]
    assert len(pre) == 2 and {j.seed for j in pre} == {22, 32}
    mpt = [j for j in jobs if j.variant == "mpt" and j not in pre]
    assert len(mpt) == 2 * len(recipes)
    for job in mpt:
        (mine,) = [p for p in pre if p.seed == job.seed]
        assert mine.name in job.needs and order[mine.name] < order[job.name]
        assert mine.bank == job.bank
    for p in pre:
        # the pre-stage waits on the stage-1 runs filling its bank
        assert p.needs and all(order[n] < order[p.name] for n in p.needs)
        (output,) = p.outputs
        assert output.parent == Path(p.bank) / "mpt" and not p.is_done()
        output.parent.mkdir(parents=True)
        output.write_bytes(b"x")
        assert p.is_done()
    dtvg = [j for j in jobs if j.variant == "dtvg" and j not in pre]
    assert not any(p.name in j.needs for j in dtvg for p in pre)
