"""Task.score on raw generated strings: label mapping, invalid outputs, per-task metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from dtvg_dist.tasks import get_task


def test_classification_invalid_outputs_count_as_wrong():
    task = get_task("rte")
    preds = [" 1\n", "0", "maybe", "", "1"]
    refs = ["1", "0", "1", "0", "0"]
    out = task.score(preds, refs)
    assert out["invalid"] == 2
    assert out["accuracy"] == pytest.approx(40.0)  # 2 right out of 5; the invalid ones are wrong
    assert set(out) == {"accuracy", "invalid"}


def test_parse_prediction_maps_words_to_indices():
    task = get_task("cb")
    assert [task.parse_prediction(s) for s in ("2", " 0 ", "3", "entailment")] == [2, 0, None, None]
    assert get_task("stsb").parse_prediction(" 3.4\n") == pytest.approx(3.4)
    assert get_task("stsb").parse_prediction("nan") is None
    assert get_task("squad").parse_prediction("  Paris ") == "Paris"


@pytest.mark.parametrize("name", ["qqp", "mrpc"])
def test_accuracy_and_f1_match_sklearn(name):
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 60).tolist()
    pred = rng.integers(0, 2, 60).tolist()
    out = get_task(name).score([str(p) for p in pred], [str(g) for g in gold])
    acc, f1 = 100 * skm.accuracy_score(gold, pred), 100 * skm.f1_score(gold, pred)
    assert out["accuracy"] == pytest.approx(acc)
    assert out["f1"] == pytest.approx(f1)
    assert "accuracy_f1" not in out  # select_by=mean gives their mean for checkpoint choice
    assert get_task(name).primary_metric == "accuracy"


def test_invalid_binary_output_hurts_f1_like_a_wrong_label():
    """An unmapped output on a negative example is a false positive, not a true negative."""
    out = get_task("mrpc").score(["1", "junk"], ["1", "0"])
    assert out["f1"] == pytest.approx(100 * skm.f1_score([1, 0], [1, 1]))


def test_cola_matthews_matches_sklearn():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 80).tolist()
    pred = rng.integers(0, 2, 80).tolist()
    out = get_task("cola").score([str(p) for p in pred], [str(g) for g in gold])
    assert out["matthews"] == pytest.approx(100 * skm.matthews_corrcoef(gold, pred))


def test_cb_macro_f1_counts_all_three_classes():
    out = get_task("cb").score(["0", "1", "bad"], ["0", "1", "2"])
    assert out["invalid"] == 1
    assert out["f1_macro"] == pytest.approx(100 * skm.f1_score([0, 1, 2], [0, 1, 0], labels=[0, 1, 2], average="macro"))


def test_stsb_correlations_from_generated_numbers():
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, 50)
    pred = np.clip(gold + rng.normal(0, 1, 50), 0, 5).round(1)
    task = get_task("stsb")
    refs = [task.reference({"sentence1": "a", "sentence2": "b", "label": float(g)}) for g in gold]
    out = task.score([f"{p:.1f}" for p in pred], refs)
    assert out["pearson"] == pytest.approx(100 * stats.pearsonr(gold, pred)[0], abs=1e-6)
    assert out["spearman"] == pytest.approx(100 * stats.spearmanr(gold, pred)[0], abs=1e-6)
    assert out["invalid"] == 0 and get_task("stsb").primary_metric == "pearson"


def test_stsb_unparsable_output_is_invalid():
    out = get_task("stsb").score(["1.0", "two", "3.0"], ["1.0", "2.0", "3.0"])
    assert out["invalid"] == 1
    assert out["pearson"] < 100.0


def test_multirc_uses_question_ids_from_reference():
    task = get_task("multirc")
    base = {"paragraph": "p", "question": "q", "answer": "a"}
    rows = [
        {**base, "idx": {"paragraph": 0, "question": 0, "answer": 0}, "label": 1},
        {**base, "idx": {"paragraph": 0, "question": 0, "answer": 1}, "label": 0},
        {**base, "idx": {"paragraph": 0, "question": 1, "answer": 0}, "label": 1},
        {**base, "idx": {"paragraph": 1, "question": 1, "answer": 0}, "label": 1},
    ]
    refs = [task.reference(r) for r in rows]
    out = task.score(["1", "0", "0", "1"], refs)
    # F1a: TP=2, FN=1 -> 0.8; EM: question 0-0 right, 0-1 wrong, 1-1 right
    assert out["f1a"] == pytest.approx(80.0)
    assert out["em"] == pytest.approx(200 / 3)
    # Plain target texts (no question ids) still give F1a.
    assert task.score(["1", "0", "0", "1"], ["1", "0", "1", "1"]) == {"f1a": pytest.approx(80.0), "invalid": 0}


def test_qa_scores_best_gold_with_squad_normalisation():
    task = get_task("nq")
    out = task.score(["the Zachary  Taylor.", ""], [["Zachary Taylor"], ["Millard Fillmore"]])
    assert out == {"em": pytest.approx(50.0), "f1": pytest.approx(50.0), "invalid": 1}
    squad = get_task("squad").score(["x y"], [["x y z"]])  # F1 0.8 (P=1, R=2/3), EM 0
    assert squad["f1_em"] == pytest.approx((80.0 + 0.0) / 2)


def test_generation_reports_bleu_and_rouge():
    out = get_task("e2e_nlg").score(["The Vaults is a pub."], ["The Vaults is a pub."])
    dtvg = {"rouge1_dtvg", "rouge2_dtvg", "rougeL_dtvg"}
    assert set(out) - {"meteor_dtvg"} == {"bleu_dtvg", "bleu", "rouge1", "rouge2", "rougeL", "invalid"} | dtvg
    assert out["bleu"] == pytest.approx(100.0) and out["rougeL"] == pytest.approx(100.0)
    assert all(out[k] == pytest.approx(100.0, abs=1e-5) for k in dtvg)
    assert out["bleu_dtvg"] == pytest.approx(100.0)


def test_score_input_errors():
    task = get_task("rte")
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        task.score(["0", "1"], ["0"])
    with pytest.raises(ValueError, match="nothing to score"):
        task.score([], [])
    with pytest.raises(ValueError, match="reference 'yes' is not one of"):
        task.score(["0"], ["yes"])
