"""Metric functions for every score the paper reports (Table 6), in percent.

Built on scikit-learn, scipy, sacrebleu and rouge-score rather than
`evaluate`, so scoring needs no network and no metric scripts. Inputs are
already-parsed values (label indices, floats, strings); mapping generated
text to those values is the task's job (`dtvg_dist.tasks`).
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


def _skm():
    """scikit-learn's metrics, imported on first use: every CLI process
    imports this module, and scipy + scikit-learn cost seconds at start-up."""
    from sklearn import metrics

    return metrics


def _stats():
    from scipy import stats

    return stats

__all__ = [
    "accuracy",
    "f1_binary",
    "f1_macro",
    "matthews",
    "pearson",
    "spearman",
    "normalize_answer",
    "exact_match",
    "token_f1",
    "squad",
    "multirc",
    "bleu",
    "bleu_dtvg",
    "gem_tokenize",
    "rouge",
    "rouge_dtvg",
    "meteor_dtvg",
    "wordnet_reader",
]


def _check_lengths(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"got {len(a)} predictions but {len(b)} references")
    if len(a) == 0:
        raise ValueError("nothing to score: predictions and references are empty")


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Share of exact matches, in percent.

    The one score written with numpy, not scikit-learn: it is what most
    evaluations compute, and importing scikit-learn (with scipy) costs every
    training process about a second (bench/startup_bench.py). The mean of a
    0/1 vector is exact, so this equals `accuracy_score` bit for bit
    (tests/test_metrics.py checks it against scikit-learn)."""
    _check_lengths(y_pred, y_true)
    return 100.0 * float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def f1_binary(y_true: Sequence[int], y_pred: Sequence[int], pos_label: int = 1) -> float:
    """F1 of the positive class (MRPC, QQP, MultiRC F1a), in percent."""
    _check_lengths(y_pred, y_true)
    return 100.0 * float(_skm().f1_score(y_true, y_pred, pos_label=pos_label, zero_division=0.0))


def f1_macro(y_true: Sequence[int], y_pred: Sequence[int], n_labels: int) -> float:
    """Unweighted mean of per-class F1 over all `n_labels` classes (CB), in percent."""
    _check_lengths(y_pred, y_true)
    return 100.0 * float(
        _skm().f1_score(y_true, y_pred, labels=list(range(n_labels)), average="macro", zero_division=0.0)
    )


def matthews(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Matthews correlation (CoLA), in percent; 0 when undefined."""
    _check_lengths(y_pred, y_true)
    with warnings.catch_warnings():  # a single class is a defined case here (MCC = 0)
        warnings.simplefilter("ignore", UserWarning)
        return 100.0 * float(_skm().matthews_corrcoef(y_true, y_pred))


def _corr(fn, x: Sequence[float], y: Sequence[float]) -> float:
    _check_lengths(x, y)
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    # A constant input makes the correlation undefined; score it 0 as ATTEMPT does
    # rather than letting NaN poison "best checkpoint" comparisons.
    if len(x_arr) < 2 or np.ptp(x_arr) == 0 or np.ptp(y_arr) == 0:
        return 0.0
    value = float(fn(x_arr, y_arr).statistic)
    return 0.0 if math.isnan(value) else 100.0 * value


def pearson(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Pearson correlation (STS-B), in percent."""
    return _corr(_stats().pearsonr, y_true, y_pred)


def spearman(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Spearman rank correlation (STS-B), in percent."""
    return _corr(_stats().spearmanr, y_true, y_pred)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 between normalised strings (0..1)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _as_list(ref: str | Sequence[str]) -> list[str]:
    return [ref] if isinstance(ref, str) else list(ref)


def squad(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """SQuAD EM and F1 (percent), each the best over an example's gold answers."""
    _check_lengths(predictions, references)
    em_total = f1_total = 0.0
    for pred, ref in zip(predictions, references, strict=True):
        golds = _as_list(ref)
        if not golds:
            raise ValueError("a QA reference has no gold answer")
        em_total += max(exact_match(pred, g) for g in golds)
        f1_total += max(token_f1(pred, g) for g in golds)
    n = len(predictions)
    return {"em": 100.0 * em_total / n, "f1": 100.0 * f1_total / n}


def multirc(
    y_true: Sequence[int], y_pred: Sequence[int], groups: Sequence[Hashable] | None
) -> dict[str, float]:
    """MultiRC F1a (F1 over all answer options) and EM (all options of a question right).

    `groups` names each option's question; EM is left out when it is None.
    """
    out = {"f1a": f1_binary(y_true, y_pred)}
    if groups is not None:
        _check_lengths(groups, y_true)
        per_group: dict[Hashable, bool] = defaultdict(lambda: True)
        for g, t, p in zip(groups, y_true, y_pred, strict=True):
            per_group[g] = per_group[g] and t == p
        out["em"] = 100.0 * sum(per_group.values()) / len(per_group)
    return out


def _reference_streams(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    refs = [_as_list(r) for r in references]
    if any(not r for r in refs):
        raise ValueError("a generation reference is empty")
    width = max(len(r) for r in refs)
    # sacrebleu wants the same number of references per example; repeating a
    # reference changes neither clipped counts nor the closest reference length.
    padded = [r + [r[0]] * (width - len(r)) for r in refs]
    return [list(stream) for stream in zip(*padded, strict=True)]


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing), 0..100."""
    import sacrebleu

    _check_lengths(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), _reference_streams(references)).score)


# ---- the BLEU of the released DTVG code (Table 4) ----------------------------------
# DTVG's metrics/metrics.py compute_nlg_metrics -> metrics/bleu.py compute_bleu:
# TensorFlow NMT's corpus BLEU (max order 4, no smoothing, brevity penalty on
# the shortest reference), on a 0..1 scale, over tokens of
# metrics/tokenizer.py default_tokenize_func('en'). That function tries
# nltk.word_tokenize(..., language='en'); NLTK has no Punkt model called "en"
# (its models are named "english"), so the probe call raises LookupError and
# the code falls back to `dumb_tokenize` (GEM-metrics' tokenizer), which also
# lower-cases. The rules below are that tokenizer's, in its order.
_GEM_TOKEN_RULES: tuple[tuple[str, str], ...] = (
    (r'(["<>{}“”«»–|—„‚‘]|\[|\]|``|\'\'|‘‘|\^)', r" \1 "),  # quotes and brackets
    (r"([;!()?#\$£%&*…]|--)", r" \1 "),  # always-separate punctuation
    (r"([^\-\w])\-([^\-0-9])", r"\1 - \2"),  # hyphen next to a non-word character
    (r"([0-9]\s+)\-([0-9])", r"\1 - \2"),  # binary minus
    (r"([^\-])\-([^\-\w])", r"\1 - \2"),
    (r"(\w)\+(\w)", r"\1 + \2"),  # plus between words or numbers
    (r"([0-9]\s*)\+([0-9])", r"\1 + \2"),
    (r"\+([^\w\+])", r"+ \1"),
    (r"([^\'’\w])([\'’])([^\'’\d])", r"\1 \2 \3"),  # apostrophes as quotes
    (r"([^\'’])([\'’])([^\'’\w])", r"\1 \2 \3"),
    (r"(\D|^)([\.,:\/])", r"\1 \2"),  # . , : / unless between digits
    (r"([\.,:\/])(\D|$)", r"\1 \2"),
    (r"\.\s*\.\s*\.", r"..."),  # an ellipsis stays one token
    (r"([\'’´])(s|m|d|ll|re|ve)\s", r" \1\2 "),  # I 'm, it 's
    (r"(n[\'’´]t\s)", r" \1 "),  # do n't
    (r" ([Cc])annot\s", r" \1an not "),
    # These four keep a literal backslash in the output, as the original's
    # replacement strings do (re leaves the unknown escape "\\'" alone).
    (r" ([Dd])\'ye\s", r" \1\' ye "),
    (r" ([Gg])imme\s", r" \1im me "),
    (r" ([Gg])onna\s", r" \1on na "),
    (r" ([Gg])otta\s", r" \1ot ta "),
    (r" ([Ll])emme\s", r" \1em me "),
    (r" ([Mm])ore\'n\s", r" \1ore \'n "),
    (r" \'([Tt])is\s", r" \'\1 is "),
    (r" \'([Tt])was\s", r" \'\1 was "),
    (r" ([Ww])anna\s", r" \1an na "),
)


def gem_tokenize(text: str) -> list[str]:
    """Lower-cased tokens as the released DTVG code's BLEU sees them (see above)."""
    for pattern, replacement in _GEM_TOKEN_RULES:
        text = re.sub(pattern, replacement, text)
    return " ".join(text.split()).lower().split(" ")


def _ngrams(tokens: Sequence[str], max_order: int) -> Counter:
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1)
    )


def bleu_dtvg(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], max_order: int = 4
) -> float:
    """Corpus BLEU as the released DTVG code computes Table 4's (TensorFlow NMT
    `compute_bleu`, no smoothing, shortest-reference brevity penalty, GEM
    tokens), in percent: the paper prints it as a fraction (0.331 = 33.1)."""
    _check_lengths(predictions, references)
    matches = [0] * max_order
    possible = [0] * max_order
    hyp_len = ref_len = 0
    for pred, ref in zip(predictions, references, strict=True):
        refs = [gem_tokenize(r) for r in _as_list(ref)]
        if not refs:
            raise ValueError("a generation reference is empty")
        hyp = gem_tokenize(pred)
        hyp_len += len(hyp)
        ref_len += min(len(r) for r in refs)
        merged: Counter = Counter()
        for r in refs:
            merged |= _ngrams(r, max_order)
        for gram, count in (_ngrams(hyp, max_order) & merged).items():
            matches[len(gram) - 1] += count
        for n in range(1, max_order + 1):
            possible[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible, strict=True)]
    if min(precisions) <= 0 or ref_len == 0:
        return 0.0
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)
    ratio = hyp_len / ref_len
    brevity = 1.0 if ratio > 1.0 else math.exp(1 - 1 / ratio)
    return 100.0 * geo_mean * brevity


def rouge(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure in percent (Porter stemming), best over references."""
    from rouge_score import rouge_scorer

    _check_lengths(predictions, references)
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = [scorer.score(g, pred) for g in _as_list(ref)]
        for k in keys:
            totals[k] += max(s[k].fmeasure for s in scores)
    n = len(predictions)
    return {k: 100.0 * v / n for k, v in totals.items()}


# ---- the ROUGE and METEOR of the released DTVG code (Table 4, checkpoint choice) ------
# DTVG's metrics/metrics.py compute_nlg_metrics -> metrics/rouge.py compute_rouge:
# per example and per reference, rouge_score([pred.lower()], [ref.lower()])
# with words = text.split(" ") (so runs of spaces give empty words), ROUGE-N on
# n-gram *sets*, F = 2PR / (P + R + 1e-8), ROUGE-L sentence level on the LCS,
# F = 2PR / (P + R + 1e-12), no stemming; each score is the best over the
# references, then the mean over examples. The release prints fractions; these
# are percent.


def _dtvg_words(text: str) -> list[str]:
    return text.lower().split(" ")


def _set_rouge_n(hyp: list[str], ref: list[str], n: int) -> float:
    def grams(words: list[str]) -> set[tuple[str, ...]]:
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    h, r = grams(hyp), grams(ref)
    overlap = len(h & r)
    precision = overlap / len(h) if h else 0.0
    recall = overlap / len(r) if r else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def _lcs_length(x: list[str], y: list[str]) -> int:
    prev = [0] * (len(y) + 1)
    for xi in x:
        cur = [0]
        for j, yj in enumerate(y, start=1):
            cur.append(prev[j - 1] + 1 if xi == yj else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _rouge_l_sentence(hyp: list[str], ref: list[str]) -> float:
    lcs = _lcs_length(hyp, ref)
    r_lcs, p_lcs = lcs / len(ref), lcs / len(hyp)
    return 2 * r_lcs * p_lcs / (r_lcs + p_lcs + 1e-12)


def rouge_dtvg(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> dict[str, float]:
    """ROUGE-1/2/L F as the released DTVG code computes them (see above), in
    percent, as `rouge1_dtvg`, `rouge2_dtvg`, `rougeL_dtvg`."""
    _check_lengths(predictions, references)
    totals = {"rouge1_dtvg": 0.0, "rouge2_dtvg": 0.0, "rougeL_dtvg": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        refs = _as_list(ref)
        if not refs:
            raise ValueError("a generation reference is empty")
        hyp = _dtvg_words(pred)
        best = dict.fromkeys(totals, 0.0)
        for r in refs:
            words = _dtvg_words(r)
            best["rouge1_dtvg"] = max(best["rouge1_dtvg"], _set_rouge_n(hyp, words, 1))
            best["rouge2_dtvg"] = max(best["rouge2_dtvg"], _set_rouge_n(hyp, words, 2))
            best["rougeL_dtvg"] = max(best["rougeL_dtvg"], _rouge_l_sentence(hyp, words))
        for k in totals:
            totals[k] += best[k]
    n = len(predictions)
    return {k: 100.0 * v / n for k, v in totals.items()}


# DTVG's metrics/meteor.py is NLTK's METEOR (exact, Porter-stem, then WordNet
# synonym matches; alpha 0.9, beta 3, gamma 0.5; str.lower), the best over the
# references, on the same tokens as its BLEU (GEM tokens, see gem_tokenize).
# WordNet's data is no Python package: Debian's `wordnet-base` installs the
# WordNet 3.0 database in /usr/share/wordnet, the files NLTK's reader opens,
# except `lexnames` (the lexicographer file list), which METEOR never reads but
# the reader opens at start: it is written from lexnames(5WN).
WORDNET_DIRS = ("/usr/share/wordnet",)
_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_wordnet_cache: dict[str, object] = {}


def _wordnet_folder() -> str | None:
    import os

    for folder in (os.environ.get("DTVG_WORDNET"), *WORDNET_DIRS):
        if folder and os.path.isfile(os.path.join(folder, "data.noun")):
            return folder
    return None


def _wordnet30_class(base: type) -> type:
    class WordNet30(base):  # type: ignore[misc, valid-type]
        """The reader with no mapping to NLTK's own `wordnet` corpus: the
        database is WordNet 3.0 itself, and the map only serves the
        multilingual (OMW) functions METEOR never calls."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return WordNet30


def _wordnet_copy(folder: str) -> str:
    """A copy of the database with `lexnames` added, in the user's cache
    (NLTK refuses files reached through links out of its root). Written to a
    temporary folder and renamed, so concurrent processes never see half."""
    import os
    import shutil
    import tempfile

    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dtvg_dist")
    root = os.path.join(cache, "wordnet-3.0")
    if os.path.isfile(os.path.join(root, "lexnames")):
        return root
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="wordnet-", dir=cache)
    for name in os.listdir(folder):
        if name.startswith(("data.", "index.")) or name.endswith(".exc"):
            shutil.copyfile(os.path.join(folder, name), os.path.join(tmp, name))
    with open(os.path.join(tmp, "lexnames"), "w") as out:
        for i, name in enumerate(_LEXNAMES):
            out.write(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n")
    try:
        os.rename(tmp, root)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def wordnet_reader():
    """NLTK's WordNet reader over a WordNet 3.0 database folder (DTVG_WORDNET,
    else Debian's /usr/share/wordnet), or None when there is none; built once."""
    if "reader" in _wordnet_cache:
        return _wordnet_cache["reader"]
    import os
    import warnings as _warnings

    folder = _wordnet_folder()
    reader = None
    if folder is not None:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader

        root = folder
        if not os.path.isfile(os.path.join(folder, "lexnames")):
            root = _wordnet_copy(folder)
        if root not in nltk.data.path:
            nltk.data.path.append(root)  # NLTK reads only from its data path
        with _warnings.catch_warnings():  # "multilingual functions are not available": none used
            _warnings.simplefilter("ignore", UserWarning)
            reader = _wordnet30_class(WordNetCorpusReader)(root, None)
    _wordnet_cache["reader"] = reader
    return reader


def meteor_dtvg(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float | None:
    """Mean METEOR (percent) as the released DTVG code computes it; None when
    no WordNet database is installed (the caller says so and leaves it out)."""
    _check_lengths(predictions, references)
    wordnet = wordnet_reader()
    if wordnet is None:
        return None
    from nltk.translate.meteor_score import meteor_score

    total = 0.0
    for pred, ref in zip(predictions, references, strict=True):
        refs = [gem_tokenize(r) for r in _as_list(ref)]
        if not refs:
            raise ValueError("a generation reference is empty")
        total += meteor_score(refs, gem_tokenize(pred), wordnet=wordnet)
    return 100.0 * total / len(predictions)
