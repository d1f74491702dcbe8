"""The demo's text table marks MPT's row as unverified (its λ and T are
placeholders, issue 23) with the same note the paper report prints."""

from __future__ import annotations

from dtvg_dist.reporting.demo_report import to_text
from dtvg_dist.reporting.paper_results import METHOD_NOTES


def _row(method: str, title: str) -> dict:
    seed = {"test": 50.0, "validation": 50.0}
    return {"method": method, "title": title, "test_mean": 50.0, "test_std": 0.0,
            "validation_mean": 50.0, "validation_std": 0.0, "seeds": {"1": seed}}


def test_mpt_row_is_marked_unverified_with_its_note():
    table = {"seeds": [1], "target": "syn_mix", "scenario": "two-sources", "question": "q",
             "metric": "accuracy",
             "budget": {"stage1": [], "target_steps": 12, "target_train_examples": 48, "test_examples": 48},
             "rows": [_row("pt", "PT"), _row("mpt", "MPT")], "claims": []}
    lines = to_text(table).splitlines()
    mpt = [line for line in lines if line.startswith("MPT")]
    assert mpt == [line for line in mpt if "(λ, T unverified)" in line] and len(mpt) == 1
    assert [line for line in lines if line.startswith("PT ")] and not any(
        "unverified" in line for line in lines if line.startswith("PT "))
    assert f"note on {METHOD_NOTES['mpt'][1]}" in lines
