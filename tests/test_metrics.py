"""Metrics against hand-computed values and against scikit-learn / scipy / sacrebleu."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from dtvg_dist import metrics

RNG_SEEDS = range(5)


def _labels(seed: int, n: int = 200, k: int = 2) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n).tolist(), rng.integers(0, k, n).tolist()


# ---- hand-computed -------------------------------------------------------------------
def test_accuracy_and_f1_by_hand():
    gold = [1, 1, 0, 0, 1]
    pred = [1, 0, 0, 1, 1]
    assert metrics.accuracy(gold, pred) == pytest.approx(60.0)
    # TP=2, FP=1, FN=1 -> P=R=2/3 -> F1=2/3
    assert metrics.f1_binary(gold, pred) == pytest.approx(200 / 3)


def test_matthews_by_hand():
    gold = [1, 1, 0, 0]
    pred = [1, 0, 0, 0]
    # TP=1 TN=2 FP=0 FN=1: (1*2 - 0*1) / sqrt(1*2*3*2) = 2/sqrt(12)
    assert metrics.matthews(gold, pred) == pytest.approx(100 * 2 / np.sqrt(12))
    assert metrics.matthews([1, 1, 1], [1, 1, 1]) == 0.0


def test_correlations_by_hand_and_degenerate():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(100.0)
    assert metrics.spearman([1, 2, 3], [1, 10, 100]) == pytest.approx(100.0)
    assert metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-100.0)
    assert metrics.pearson([1, 2, 3], [2, 2, 2]) == 0.0  # constant output: undefined -> 0
    assert metrics.spearman([1.0], [1.0]) == 0.0


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The Cat!", "cat"),
        ("an apple, a day", "apple day"),
        ("  Hello,\t  World.\n", "hello world"),
        ("theory of an atheist", "theory of atheist"),  # articles only as whole words
        ("U.S. (Army)", "us army"),
        ("A", ""),
    ],
)
def test_squad_normalisation(raw, normalised):
    assert metrics.normalize_answer(raw) == normalised


def test_token_f1_and_em_by_hand():
    # normalised: [cat, sat] vs [cat, sat, on, mat]: P=1, R=1/2 -> F1=2/3
    assert metrics.token_f1("The cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    assert metrics.token_f1("dog", "cat") == 0.0
    assert metrics.exact_match("The  Cat.", "cat") == 1.0
    assert metrics.token_f1("the", "cat") == 0.0  # empty after normalisation


def test_squad_takes_best_gold():
    out = metrics.squad(["Paris", "in the big city"], [["Paris, France", "paris"], ["the city"]])
    # ex1: EM 1 (second gold), F1 1; ex2: EM 0, F1 vs [city]: [in, big, city] P=1/3 R=1 -> 0.5
    assert out["em"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (1 + 0.5) / 2)
    assert metrics.squad(["x"], ["x"]) == {"em": 100.0, "f1": 100.0}  # a single string reference


def test_multirc_f1a_and_em_by_hand():
    gold = [1, 0, 1, 0, 1]
    pred = [1, 0, 0, 0, 1]
    groups = ["q1", "q1", "q2", "q2", "q3"]
    out = metrics.multirc(gold, pred, groups)
    # TP=2 FN=1 FP=0 -> F1 = 0.8; EM: q1 right, q2 wrong, q3 right -> 2/3
    assert out["f1a"] == pytest.approx(80.0)
    assert out["em"] == pytest.approx(200 / 3)
    assert "em" not in metrics.multirc(gold, pred, None)


def test_rouge_by_hand():
    out = metrics.rouge(["the cat"], ["the cat sat"])
    # unigrams: P=1, R=2/3 -> F=0.8; bigrams: P=1, R=1/2 -> F=2/3; LCS=2 -> 0.8
    assert out["rouge1"] == pytest.approx(80.0)
    assert out["rouge2"] == pytest.approx(200 / 3)
    assert out["rougeL"] == pytest.approx(80.0)
    assert metrics.rouge(["a b"], [["x y", "a b"]])["rouge1"] == pytest.approx(100.0)  # best reference


def test_bleu_identity_and_multi_reference():
    import sacrebleu

    assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    preds = ["the cat sat on the mat today", "a dog ran in the park"]
    refs = [["the cat sat on a mat", "a cat sat on the mat today"], ["a dog ran in a park"]]
    expected = sacrebleu.corpus_bleu(preds, [[refs[0][0], refs[1][0]], [refs[0][1], refs[1][0]]]).score
    assert metrics.bleu(preds, refs) == pytest.approx(expected)


def test_length_mismatch_and_empty_are_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metrics.accuracy([1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        metrics.squad([], [])


# ---- against scikit-learn / scipy on random data ----------------------------------------
@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_classification_matches_sklearn(seed):
    gold, pred = _labels(seed)
    assert metrics.accuracy(gold, pred) == 100 * skm.accuracy_score(gold, pred)  # bit for bit
    assert metrics.f1_binary(gold, pred) == pytest.approx(100 * skm.f1_score(gold, pred))
    assert metrics.matthews(gold, pred) == pytest.approx(100 * skm.matthews_corrcoef(gold, pred))
    gold3, pred3 = _labels(seed, k=3)
    assert metrics.f1_macro(gold3, pred3, 3) == pytest.approx(100 * skm.f1_score(gold3, pred3, average="macro"))


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 5, 100)
    y = x + rng.normal(0, 1.5, 100)
    assert metrics.pearson(x, y) == pytest.approx(100 * stats.pearsonr(x, y)[0])
    assert metrics.spearman(x, y) == pytest.approx(100 * stats.spearmanr(x, y)[0])


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_multirc_em_matches_groupwise_recount(seed):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 15, 80).tolist()
    gold, pred = rng.integers(0, 2, 80).tolist(), rng.integers(0, 2, 80).tolist()
    out = metrics.multirc(gold, pred, groups)
    per_q = [all(g == p for g, p, q in zip(gold, pred, groups, strict=True) if q == grp) for grp in set(groups)]
    assert out["em"] == pytest.approx(100 * np.mean(per_q))
    assert out["f1a"] == pytest.approx(100 * skm.f1_score(gold, pred))


# ---- the released DTVG code's BLEU (Table 4) ----------------------------------------------------------
def test_gem_tokenize_lowercases_and_splits_like_gem_metrics():
    """The rules of DTVG's metrics/tokenizer.py dumb_tokenize (GEM-metrics)."""
    assert metrics.gem_tokenize("The Eagle is a cheap coffee shop, near Burger King. It's 5-stars!") == [
        "the", "eagle", "is", "a", "cheap", "coffee", "shop", ",", "near", "burger", "king", ".",
        "it", "'s", "5-stars", "!",
    ]
    assert metrics.gem_tokenize('"Don\'t" -- costs $3.50 (1,000/yr)...') == [
        '"', "do", "n't", '"', "--", "costs", "$", "3.50", "(", "1,000/", "yr", ")", "...",  # sic
    ]


def test_bleu_dtvg_by_hand():
    # the cat sat on the mat | the cat sat on a mat: clipped n-gram matches 5/6, 3/5, 2/4, 1/3,
    # equal lengths (no brevity penalty): BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** 0.25.
    got = metrics.bleu_dtvg(["The cat sat on the mat"], ["the cat sat on a mat"])
    assert got == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-9)
    # A 4-token hypothesis against an 8-token reference: brevity penalty exp(1 - 8/4).
    short = metrics.bleu_dtvg(["a b c d"], ["a b c d e f g h"])
    assert short == pytest.approx(100 * np.exp(1 - 2), abs=1e-9)
    # No matching 4-gram: no smoothing, so 0 (TensorFlow NMT's compute_bleu).
    assert metrics.bleu_dtvg(["a b c x"], ["a b c d"]) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_dtvg_matches_sacrebleu_on_the_same_tokens(seed):
    """Corpus BLEU without smoothing on pre-tokenised text: sacrebleu (tokenize='none',
    smooth_method='none') is an independent implementation of the same formula."""
    import sacrebleu

    rng = np.random.default_rng(seed)
    words = ["the", "a", "cat", "dog", "sat", "on", "mat", "near", "King's", "coffee", "shop", ",", ".", "is", "Alimentum"]
    preds = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(20)]
    refs = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(20)]
    ours = metrics.bleu_dtvg(preds, refs)
    joined = lambda texts: [" ".join(metrics.gem_tokenize(t)) for t in texts]  # noqa: E731
    theirs = sacrebleu.corpus_bleu(joined(preds), [joined(refs)], tokenize="none", smooth_method="none").score
    assert ours == pytest.approx(theirs, abs=1e-9)


# ---- the released DTVG code's ROUGE and METEOR ---------------------------------------
_GEN_WORDS = ["The", "the", "a", "cat", "cats", "dog", "sat", "sitting", "on", "mat", "near", "King's",
              "cheap", "inexpensive", "big", "large", "shop", "store", "runs", "running", ",", ".", ""]


def _corpus(rng: np.random.Generator, n: int, multi: bool) -> list:
    def text() -> str:
        return " ".join(rng.choice(_GEN_WORDS, rng.integers(1, 12)))  # "" words make double spaces

    if not multi:
        return [text() for _ in range(n)]
    return [[text() for _ in range(rng.integers(1, 4))] for _ in range(n)]


@pytest.mark.parametrize(("seed", "multi"), [(0, False), (1, False), (2, True), (3, True)])
def test_rouge_dtvg_matches_the_released_function(seed, multi):
    """Random corpora (mixed case, runs of spaces, several references) against
    the release's metrics/rouge.py compute_rouge itself; tolerance 1e-9 percent."""
    from dtvg_release_metrics import compute_rouge

    rng = np.random.default_rng(seed)
    preds, refs = _corpus(rng, 30, False), _corpus(rng, 30, multi)
    ours = metrics.rouge_dtvg(preds, refs)
    theirs = compute_rouge(translation_corpus=preds, reference_corpus=refs)
    for key, release_key in (("rouge1_dtvg", "rouge_1"), ("rouge2_dtvg", "rouge_2"), ("rougeL_dtvg", "rouge_l")):
        assert ours[key] == pytest.approx(100.0 * theirs[f"{release_key}/f_score"], abs=1e-9), key


def test_rouge_dtvg_has_no_stemmer_and_counts_ngram_sets():
    # rouge-score stems "cats" to "cat"; the release's ROUGE does not
    assert metrics.rouge_dtvg(["cats"], ["cat"])["rouge1_dtvg"] == pytest.approx(0.0, abs=1e-6)
    assert metrics.rouge(["cats"], ["cat"])["rouge1"] == pytest.approx(100.0)
    # "a a b" against "a b": sets {a, b} both sides -> 1-gram F = 1
    assert metrics.rouge_dtvg(["a a b"], ["A b"])["rouge1_dtvg"] == pytest.approx(100.0, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_meteor_dtvg_matches_the_released_function(seed):
    """NLTK 3.10's METEOR on Debian's WordNet 3.0 against the release's copy
    (NLTK 3.9 matching loops) on the same GEM tokens; tolerance 1e-9 percent."""
    from dtvg_release_metrics import meteor_score

    wordnet = metrics.wordnet_reader()
    if wordnet is None:
        pytest.skip("no WordNet database (Debian package wordnet-base)")
    rng = np.random.default_rng(seed)
    preds, refs = _corpus(rng, 25, False), _corpus(rng, 25, True)
    theirs = np.mean([
        meteor_score([metrics.gem_tokenize(r) for r in rs], metrics.gem_tokenize(p), wordnet=wordnet)
        for p, rs in zip(preds, refs, strict=True)
    ])
    assert metrics.meteor_dtvg(preds, refs) == pytest.approx(100.0 * theirs, abs=1e-9)


def test_meteor_dtvg_uses_wordnet_synonyms():
    if metrics.wordnet_reader() is None:
        pytest.skip("no WordNet database (Debian package wordnet-base)")
    # "store" is a synonym of "shop" and its own Porter stem (NLTK matches synonyms
    # against the stemmed leftovers, so "inexpensive" -> "inexpens" would not match)
    synonym = metrics.meteor_dtvg(["a cheap shop"], ["a cheap store"])
    unrelated = metrics.meteor_dtvg(["a cheap tree"], ["a cheap store"])
    assert synonym > unrelated > 0


def test_meteor_dtvg_is_none_without_wordnet(monkeypatch):
    monkeypatch.setattr(metrics, "_wordnet_cache", {})
    monkeypatch.setattr(metrics, "WORDNET_DIRS", ())
    monkeypatch.delenv("DTVG_WORDNET", raising=False)
    assert metrics.meteor_dtvg(["a"], ["a"]) is None
