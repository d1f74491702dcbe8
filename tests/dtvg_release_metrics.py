"""The released DTVG code's ROUGE and METEOR, copied unchanged (but for
imports and lint markers) as the reference the project's `rouge_dtvg` and
`meteor_dtvg` are tested against.

Source: zpy2477/DTVG metrics/rouge.py (functions _get_ngrams .. compute_rouge)
and metrics/meteor.py (_generate_enums .. meteor_score, the NLTK 3.9 METEOR
the release ships; NLTK 3.10 rewrote its matching loops).
"""
# ruff: noqa
# fmt: off
import itertools
from itertools import chain
from typing import Callable, Iterable, List, Tuple

import numpy as np
from nltk.stem.porter import PorterStemmer

def _get_ngrams(n, text):
    """Calcualtes n-grams.

    Args:
        n: which n-grams to calculate
        text: An array of tokens

    Returns:
        A set of n-grams
    """
    ngram_set = set()
    text_length = len(text)
    max_index_ngram_start = text_length - n
    for i in range(max_index_ngram_start + 1):
        ngram_set.add(tuple(text[i:i + n]))
    return ngram_set


def _split_into_words(sentences):
    """Splits multiple sentences into words and flattens the result"""
    return list(itertools.chain(*[_.split(" ") for _ in sentences]))


def _get_word_ngrams(n, sentences):
    """Calculates word n-grams for multiple sentences.
    """
    assert len(sentences) > 0
    assert n > 0

    words = _split_into_words(sentences)
    return _get_ngrams(n, words)


def _len_lcs(x, y):
    """
    Returns the length of the Longest Common Subsequence between sequences x
    and y.
    Source: http://www.algorithmist.com/index.php/Longest_Common_Subsequence

    Args:
        x: sequence of words
        y: sequence of words

    Returns
        integer: Length of LCS between x and y
    """
    table = _lcs(x, y)
    n, m = len(x), len(y)
    return table[n, m]


def _lcs(x, y):
    """
    Computes the length of the longest common subsequence (lcs) between two
    strings. The implementation below uses a DP programming algorithm and runs
    in O(nm) time where n = len(x) and m = len(y).
    Source: http://www.algorithmist.com/index.php/Longest_Common_Subsequence

    Args:
        x: collection of words
        y: collection of words

    Returns:
        Table of dictionary of coord and len lcs
    """
    n, m = len(x), len(y)
    table = dict()
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                table[i, j] = 0
            elif x[i - 1] == y[j - 1]:
                table[i, j] = table[i - 1, j - 1] + 1
            else:
                table[i, j] = max(table[i - 1, j], table[i, j - 1])
    return table


def _recon_lcs(x, y):
    """
    Returns the Longest Subsequence between x and y.
    Source: http://www.algorithmist.com/index.php/Longest_Common_Subsequence

    Args:
        x: sequence of words
        y: sequence of words

    Returns:
        sequence: LCS of x and y
    """
    i, j = len(x), len(y)
    table = _lcs(x, y)

    def _recon(i, j):
        """private recon calculation"""
        if i == 0 or j == 0:
            return []
        elif x[i - 1] == y[j - 1]:
            return _recon(i - 1, j - 1) + [(x[i - 1], i)]
        elif table[i - 1, j] > table[i, j - 1]:
            return _recon(i - 1, j)
        else:
            return _recon(i, j - 1)

    recon_tuple = tuple(map(lambda x: x[0], _recon(i, j)))
    return recon_tuple


def rouge_n(evaluated_sentences, reference_sentences, n=2):
    """
    Computes ROUGE-N of two text collections of sentences.
    Sourece: http://research.microsoft.com/en-us/um/people/cyl/download/
    papers/rouge-working-note-v1.3.1.pdf

    Args:
        evaluated_sentences: The sentences that have been picked by the summarizer
        reference_sentences: The sentences from the referene set
        n: Size of ngram.  Defaults to 2.

    Returns:
        A tuple (f1, precision, recall) for ROUGE-N

    Raises:
        ValueError: raises exception if a param has len <= 0
    """
    if len(evaluated_sentences) <= 0 or len(reference_sentences) <= 0:
        raise ValueError("Collections must contain at least 1 sentence.")

    evaluated_ngrams = _get_word_ngrams(n, evaluated_sentences)
    reference_ngrams = _get_word_ngrams(n, reference_sentences)
    reference_count = len(reference_ngrams)
    evaluated_count = len(evaluated_ngrams)

    # Gets the overlapping ngrams between evaluated and reference
    overlapping_ngrams = evaluated_ngrams.intersection(reference_ngrams)
    overlapping_count = len(overlapping_ngrams)

    # Handle edge case. This isn't mathematically correct, but it's good enough
    if evaluated_count == 0:
        precision = 0.0
    else:
        precision = overlapping_count / evaluated_count

    if reference_count == 0:
        recall = 0.0
    else:
        recall = overlapping_count / reference_count

    f1_score = 2.0 * ((precision * recall) / (precision + recall + 1e-8))

    # return overlapping_count / reference_count
    return f1_score, precision, recall


def _f_p_r_lcs(llcs, m, n):
    """
    Computes the LCS-based F-measure score
    Source: http://research.microsoft.com/en-us/um/people/cyl/download/papers/
    rouge-working-note-v1.3.1.pdf

    Args:
        llcs: Length of LCS
        m: number of words in reference summary
        n: number of words in candidate summary

    Returns:
        Float. LCS-based F-measure score
    """
    r_lcs = llcs / m
    p_lcs = llcs / n
    # beta = p_lcs / (r_lcs + 1e-12)
    beta = 1
    num = (1 + (beta**2)) * r_lcs * p_lcs
    denom = r_lcs + ((beta**2) * p_lcs)
    f_lcs = num / (denom + 1e-12)
    return f_lcs, p_lcs, r_lcs


def rouge_l_sentence_level(evaluated_sentences, reference_sentences):
    """
    Computes ROUGE-L (sentence level) of two text collections of sentences.
    http://research.microsoft.com/en-us/um/people/cyl/download/papers/
    rouge-working-note-v1.3.1.pdf

    Calculated according to:
    R_lcs = LCS(X,Y)/m
    P_lcs = LCS(X,Y)/n
    F_lcs = ((1 + beta^2)*R_lcs*P_lcs) / (R_lcs + (beta^2) * P_lcs)

    where:
    X = reference summary
    Y = Candidate summary
    m = length of reference summary
    n = length of candidate summary

    Args:
        evaluated_sentences: The sentences that have been picked by the summarizer
        reference_sentences: The sentences from the referene set

    Returns:
        A float: F_lcs

    Raises:
        ValueError: raises exception if a param has len <= 0
    """
    if len(evaluated_sentences) <= 0 or len(reference_sentences) <= 0:
        raise ValueError("Collections must contain at least 1 sentence.")
    reference_words = _split_into_words(reference_sentences)
    evaluated_words = _split_into_words(evaluated_sentences)
    m = len(reference_words)
    n = len(evaluated_words)
    lcs = _len_lcs(evaluated_words, reference_words)
    return _f_p_r_lcs(lcs, m, n)


def _union_lcs(evaluated_sentences, reference_sentence):
    """
    Returns LCS_u(r_i, C) which is the LCS score of the union longest common
    subsequence between reference sentence ri and candidate summary C. For example
    if r_i= w1 w2 w3 w4 w5, and C contains two sentences: c1 = w1 w2 w6 w7 w8 and
    c2 = w1 w3 w8 w9 w5, then the longest common subsequence of r_i and c1 is
    "w1 w2" and the longest common subsequence of r_i and c2 is "w1 w3 w5". The
    union longest common subsequence of r_i, c1, and c2 is "w1 w2 w3 w5" and
    LCS_u(r_i, C) = 4/5.

    Args:
        evaluated_sentences: The sentences that have been picked by the summarizer
        reference_sentence: One of the sentences in the reference summaries

    Returns:
        float: LCS_u(r_i, C)

    ValueError:
        Raises exception if a param has len <= 0
    """
    if len(evaluated_sentences) <= 0:
        raise ValueError("Collections must contain at least 1 sentence.")

    lcs_union = set()
    reference_words = _split_into_words([reference_sentence])
    combined_lcs_length = 0
    for eval_s in evaluated_sentences:
        evaluated_words = _split_into_words([eval_s])
        lcs = set(_recon_lcs(reference_words, evaluated_words))
        combined_lcs_length += len(lcs)
        lcs_union = lcs_union.union(lcs)

    union_lcs_count = len(lcs_union)
    union_lcs_value = union_lcs_count / combined_lcs_length
    return union_lcs_value


def rouge_l_summary_level(evaluated_sentences, reference_sentences):
    """
    Computes ROUGE-L (summary level) of two text collections of sentences.
    http://research.microsoft.com/en-us/um/people/cyl/download/papers/
    rouge-working-note-v1.3.1.pdf

    Calculated according to:
    R_lcs = SUM(1, u)[LCS<union>(r_i,C)]/m
    P_lcs = SUM(1, u)[LCS<union>(r_i,C)]/n
    F_lcs = ((1 + beta^2)*R_lcs*P_lcs) / (R_lcs + (beta^2) * P_lcs)

    where:
    SUM(i,u) = SUM from i through u
    u = number of sentences in reference summary
    C = Candidate summary made up of v sentences
    m = number of words in reference summary
    n = number of words in candidate summary

    Args:
        evaluated_sentences: The sentences that have been picked by the summarizer
        reference_sentence: One of the sentences in the reference summaries

    Returns:
        A float: F_lcs

    Raises:
        ValueError: raises exception if a param has len <= 0
    """
    if len(evaluated_sentences) <= 0 or len(reference_sentences) <= 0:
        raise ValueError("Collections must contain at least 1 sentence.")

    # total number of words in reference sentences
    m = len(_split_into_words(reference_sentences))

    # total number of words in evaluated sentences
    n = len(_split_into_words(evaluated_sentences))

    union_lcs_sum_across_all_references = 0
    for ref_s in reference_sentences:
        union_lcs_sum_across_all_references += _union_lcs(evaluated_sentences,
                                                        ref_s)
    return _f_p_r_lcs(union_lcs_sum_across_all_references, m, n)


def rouge_score(predictions, references):
    """Calculates average rouge scores for a list of predictions and
    references"""

    # Filter out hyps that are of 0 length
    # hyps_and_refs = zip(predictions, references)
    # hyps_and_refs = [_ for _ in hyps_and_refs if len(_[0]) > 0]
    # predictions, references = zip(*hyps_and_refs)

    # Calculate ROUGE-1 F1, precision, recall scores
    rouge_1 = [
        rouge_n([hyp], [ref], 1) for hyp, ref in zip(predictions, references)
    ]
    rouge_1_f, rouge_1_p, rouge_1_r = map(np.mean, zip(*rouge_1))

    # Calculate ROUGE-2 F1, precision, recall scores
    rouge_2 = [
        rouge_n([hyp], [ref], 2) for hyp, ref in zip(predictions, references)
    ]
    rouge_2_f, rouge_2_p, rouge_2_r = map(np.mean, zip(*rouge_2))

    # Calculate ROUGE-L F1, precision, recall scores
    rouge_l = [
        rouge_l_sentence_level([hyp], [ref])
        for hyp, ref in zip(predictions, references)
    ]
    rouge_l_f, rouge_l_p, rouge_l_r = map(np.mean, zip(*rouge_l))

    return {
        "rouge_1/f_score": rouge_1_f,
        "rouge_1/r_score": rouge_1_r,
        "rouge_1/p_score": rouge_1_p,
        "rouge_2/f_score": rouge_2_f,
        "rouge_2/r_score": rouge_2_r,
        "rouge_2/p_score": rouge_2_p,
        "rouge_l/f_score": rouge_l_f,
        "rouge_l/r_score": rouge_l_r,
        "rouge_l/p_score": rouge_l_p,
    }


def compute_rouge(translation_corpus, reference_corpus):
    count = 0
    rouge_scores = {
        "rouge_1/f_score": 0,
        "rouge_1/r_score": 0,
        "rouge_1/p_score": 0,
        "rouge_2/f_score": 0,
        "rouge_2/r_score": 0,
        "rouge_2/p_score": 0,
        "rouge_l/f_score": 0,
        "rouge_l/r_score": 0,
        "rouge_l/p_score": 0,
    }
    for (references, translation) in zip(reference_corpus, translation_corpus):
        count = count + 1
        item_rouge_scores = {
            "rouge_1/f_score": 0,
            "rouge_1/r_score": 0,
            "rouge_1/p_score": 0,
            "rouge_2/f_score": 0,
            "rouge_2/r_score": 0,
            "rouge_2/p_score": 0,
            "rouge_l/f_score": 0,
            "rouge_l/r_score": 0,
            "rouge_l/p_score": 0,
        }
        if not isinstance(references,list):
           new_references = [references]
        else:
           new_references = references
        if isinstance(translation,list):
           t = translation[0]
        else :
           t = translation
        for r in new_references:
            r_t_score = rouge_score(predictions=[t.lower()],references=[r.lower()])
            for metric in item_rouge_scores:
                item_rouge_scores[metric] = max(item_rouge_scores[metric],r_t_score[metric])

        for metric in item_rouge_scores:
            rouge_scores[metric] = rouge_scores[metric] + item_rouge_scores[metric]
    for metric in rouge_scores:
        rouge_scores[metric] = rouge_scores[metric] / count
    return rouge_scores

def _generate_enums(
    predictions: Iterable[str],
    reference: Iterable[str],
    preprocess: Callable[[str], str] = str.lower,
) -> Tuple[List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    Takes in pre-tokenized inputs for predictions and reference and returns
    enumerated word lists for each of them

    :param predictions: pre-tokenized predictions
    :param reference: pre-tokenized reference
    :preprocess: preprocessing method (default str.lower)
    :return: enumerated words list
    """
    if isinstance(predictions, str):
        raise TypeError(
            f'"predictions" expects pre-tokenized predictions (Iterable[str]): {predictions}'
        )

    if isinstance(reference, str):
        raise TypeError(
            f'"reference" expects pre-tokenized reference (Iterable[str]): {reference}'
        )

    enum_predictions_list = list(enumerate(map(preprocess, predictions)))
    enum_reference_list = list(enumerate(map(preprocess, reference)))
    return enum_predictions_list, enum_reference_list


def exact_match(
    predictions: Iterable[str], reference: Iterable[str]
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    matches exact words in predictions and reference
    and returns a word mapping based on the enumerated
    word id between predictions and reference

    :param predictions: pre-tokenized predictions
    :param reference: pre-tokenized reference
    :return: enumerated matched tuples, enumerated unmatched predictions tuples,
             enumerated unmatched reference tuples
    """
    enum_predictions_list, enum_reference_list = _generate_enums(predictions, reference)
    return _match_enums(enum_predictions_list, enum_reference_list)




def _match_enums(
    enum_predictions_list: List[Tuple[int, str]],
    enum_reference_list: List[Tuple[int, str]],
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    matches exact words in predictions and reference and returns
    a word mapping between enum_predictions_list and enum_reference_list
    based on the enumerated word id.

    :param enum_predictions_list: enumerated predictions list
    :param enum_reference_list: enumerated reference list
    :return: enumerated matched tuples, enumerated unmatched predictions tuples,
             enumerated unmatched reference tuples
    """
    word_match = []
    for i in range(len(enum_predictions_list))[::-1]:
        for j in range(len(enum_reference_list))[::-1]:
            if enum_predictions_list[i][1] == enum_reference_list[j][1]:
                word_match.append(
                    (enum_predictions_list[i][0], enum_reference_list[j][0])
                )
                enum_predictions_list.pop(i)
                enum_reference_list.pop(j)
                break
    return word_match, enum_predictions_list, enum_reference_list


def _enum_stem_match(
    enum_predictions_list: List[Tuple[int, str]],
    enum_reference_list: List[Tuple[int, str]],
    stemmer=PorterStemmer(),
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    Stems each word and matches them in predictions and reference
    and returns a word mapping between enum_predictions_list and
    enum_reference_list based on the enumerated word id. The function also
    returns a enumerated list of unmatched words for predictions and reference.

    :param enum_predictions_list: enumerated predictions list
    :param enum_reference_list: enumerated reference list
    :param stemmer: nltk.stem.api.StemmerI object (default PorterStemmer())
    :return: enumerated matched tuples, enumerated unmatched predictions tuples,
             enumerated unmatched reference tuples
    """
    stemmed_enum_predictions_list = [
        (word_pair[0], stemmer.stem(word_pair[1])) for word_pair in enum_predictions_list
    ]

    stemmed_enum_reference_list = [
        (word_pair[0], stemmer.stem(word_pair[1])) for word_pair in enum_reference_list
    ]

    return _match_enums(stemmed_enum_predictions_list, stemmed_enum_reference_list)


def stem_match(
    predictions: Iterable[str],
    reference: Iterable[str],
    stemmer=PorterStemmer(),
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    Stems each word and matches them in predictions and reference
    and returns a word mapping between predictions and reference

    :param predictions: pre-tokenized predictions
    :param reference: pre-tokenized reference
    :param stemmer: nltk.stem.api.StemmerI object (default PorterStemmer())
    :return: enumerated matched tuples, enumerated unmatched predictions tuples,
             enumerated unmatched reference tuples
    """
    enum_predictions_list, enum_reference_list = _generate_enums(predictions, reference)
    return _enum_stem_match(enum_predictions_list, enum_reference_list, stemmer=stemmer)




def _enum_wordnetsyn_match(
    enum_predictions_list: List[Tuple[int, str]],
    enum_reference_list: List[Tuple[int, str]],
    wordnet=None,
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    Matches each word in reference to a word in predictions
    if any synonym of a predictions word is the exact match
    to the reference word.

    :param enum_predictions_list: enumerated predictions list
    :param enum_reference_list: enumerated reference list
    :param wordnet: a wordnet corpus reader object (default nltk.corpus.wordnet)
    """
    word_match = []
    for i in range(len(enum_predictions_list))[::-1]:
        predictions_syns = set(
            chain.from_iterable(
                (
                    lemma.name()
                    for lemma in synset.lemmas()
                    if lemma.name().find("_") < 0
                )
                for synset in wordnet.synsets(enum_predictions_list[i][1])
            )
        ).union({enum_predictions_list[i][1]})
        for j in range(len(enum_reference_list))[::-1]:
            if enum_reference_list[j][1] in predictions_syns:
                word_match.append(
                    (enum_predictions_list[i][0], enum_reference_list[j][0])
                )
                enum_predictions_list.pop(i)
                enum_reference_list.pop(j)
                break
    return word_match, enum_predictions_list, enum_reference_list

def wordnetsyn_match(
    predictions: Iterable[str],
    reference: Iterable[str],
    wordnet=None,
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    Matches each word in reference to a word in predictions if any synonym
    of a predictions word is the exact match to the reference word.

    :param predictions: pre-tokenized predictions
    :param reference: pre-tokenized reference
    :param wordnet: a wordnet corpus reader object (default nltk.corpus.wordnet)
    :return: list of mapped tuples
    """
    enum_predictions_list, enum_reference_list = _generate_enums(predictions, reference)
    return _enum_wordnetsyn_match(
        enum_predictions_list, enum_reference_list, wordnet=wordnet
    )




def _enum_align_words(
    enum_predictions_list: List[Tuple[int, str]],
    enum_reference_list: List[Tuple[int, str]],
    stemmer=PorterStemmer(),
    wordnet=None,
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    Aligns/matches words in the predictions to reference by sequentially
    applying exact match, stemmed match and wordnet based synonym match.
    in case there are multiple matches the match which has the least number
    of crossing is chosen. Takes enumerated list as input instead of
    string input

    :param enum_predictions_list: enumerated predictions list
    :param enum_reference_list: enumerated reference list
    :param stemmer: nltk.stem.api.StemmerI object (default PorterStemmer())
    :param wordnet: a wordnet corpus reader object (default nltk.corpus.wordnet)
    :return: sorted list of matched tuples, unmatched predictions list,
             unmatched reference list
    """
    exact_matches, enum_predictions_list, enum_reference_list = _match_enums(
        enum_predictions_list, enum_reference_list
    )

    stem_matches, enum_predictions_list, enum_reference_list = _enum_stem_match(
        enum_predictions_list, enum_reference_list, stemmer=stemmer
    )

    wns_matches, enum_predictions_list, enum_reference_list = _enum_wordnetsyn_match(
        enum_predictions_list, enum_reference_list, wordnet=wordnet
    )

    return (
        sorted(
            exact_matches + stem_matches + wns_matches, key=lambda wordpair: wordpair[0]
        ),
        enum_predictions_list,
        enum_reference_list,
    )


def align_words(
    predictions: Iterable[str],
    reference: Iterable[str],
    stemmer=PorterStemmer(),
    wordnet=None,
) -> Tuple[List[Tuple[int, int]], List[Tuple[int, str]], List[Tuple[int, str]]]:
    """
    Aligns/matches words in the predictions to reference by sequentially
    applying exact match, stemmed match and wordnet based synonym match.
    In case there are multiple matches the match which has the least number
    of crossing is chosen.

    :param predictions: pre-tokenized predictions
    :param reference: pre-tokenized reference
    :param stemmer: nltk.stem.api.StemmerI object (default PorterStemmer())
    :param wordnet: a wordnet corpus reader object (default nltk.corpus.wordnet)
    :return: sorted list of matched tuples, unmatched predictions list, unmatched reference list
    """
    enum_predictions_list, enum_reference_list = _generate_enums(predictions, reference)
    return _enum_align_words(
        enum_predictions_list, enum_reference_list, stemmer=stemmer, wordnet=wordnet
    )




def _count_chunks(matches: List[Tuple[int, int]]) -> int:
    """
    Counts the fewest possible number of chunks such that matched unigrams
    of each chunk are adjacent to each other. This is used to calculate the
    fragmentation part of the metric.

    :param matches: list containing a mapping of matched words (output of align_words)
    :return: Number of chunks a sentence is divided into post alignment
    """
    i = 0
    chunks = 1
    while i < len(matches) - 1:
        if (matches[i + 1][0] == matches[i][0] + 1) and (
            matches[i + 1][1] == matches[i][1] + 1
        ):
            i += 1
            continue
        i += 1
        chunks += 1
    return chunks


def single_meteor_score(
    reference: Iterable[str],
    predictions: Iterable[str],
    preprocess: Callable[[str], str] = str.lower,
    stemmer=PorterStemmer(),
    wordnet=None,
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
) -> float:
    """
    Calculates METEOR score for single predictions and reference as per
    "Meteor: An Automatic Metric for MT Evaluation with HighLevels of
    Correlation with Human Judgments" by Alon Lavie and Abhaya Agarwal,
    in Proceedings of ACL.
    https://www.cs.cmu.edu/~alavie/METEOR/pdf/Lavie-Agarwal-2007-METEOR.pdf


    >>> predictions1 = ['It', 'is', 'a', 'guide', 'to', 'action', 'which', 'ensures', 'that', 'the', 'military', 'always', 'obeys', 'the', 'commands', 'of', 'the', 'party']

    >>> reference1 = ['It', 'is', 'a', 'guide', 'to', 'action', 'that', 'ensures', 'that', 'the', 'military', 'will', 'forever', 'heed', 'Party', 'commands']


    >>> round(single_meteor_score(reference1, predictions1),4)
    0.6944

        If there is no words match during the alignment the method returns the
        score as 0. We can safely  return a zero instead of raising a
        division by zero error as no match usually implies a bad translation.

    >>> round(single_meteor_score(['this', 'is', 'a', 'cat'], ['non', 'matching', 'predictions']),4)
    0.0

    :param reference: pre-tokenized reference
    :param predictions: pre-tokenized predictions
    :param preprocess: preprocessing function (default str.lower)
    :param stemmer: nltk.stem.api.StemmerI object (default PorterStemmer())
    :param wordnet: a wordnet corpus reader object (default nltk.corpus.wordnet)
    :param alpha: parameter for controlling relative weights of precision and recall.
    :param beta: parameter for controlling shape of penalty as a
                 function of as a function of fragmentation.
    :param gamma: relative weight assigned to fragmentation penalty.
    :return: The sentence-level METEOR score.
    """
    enum_predictions, enum_reference = _generate_enums(
        predictions, reference, preprocess=preprocess
    )
    translation_length = len(enum_predictions)
    reference_length = len(enum_reference)
    matches, _, _ = _enum_align_words(
        enum_predictions, enum_reference, stemmer=stemmer, wordnet=wordnet
    )
    matches_count = len(matches)
    try:
        precision = float(matches_count) / translation_length
        recall = float(matches_count) / reference_length
        fmean = (precision * recall) / (alpha * precision + (1 - alpha) * recall)
        chunk_count = float(_count_chunks(matches))
        frag_frac = chunk_count / matches_count
    except ZeroDivisionError:
        return 0.0
    penalty = gamma * frag_frac**beta
    return (1 - penalty) * fmean


def meteor_score(
    references: Iterable[Iterable[str]],
    predictions: Iterable[str],
    preprocess: Callable[[str], str] = str.lower,
    stemmer=PorterStemmer(),
    wordnet=None,
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
) -> float:
    """
    Calculates METEOR score for predictions with multiple references as
    described in "Meteor: An Automatic Metric for MT Evaluation with
    HighLevels of Correlation with Human Judgments" by Alon Lavie and
    Abhaya Agarwal, in Proceedings of ACL.
    https://www.cs.cmu.edu/~alavie/METEOR/pdf/Lavie-Agarwal-2007-METEOR.pdf


    In case of multiple references the best score is chosen. This method
    iterates over single_meteor_score and picks the best pair among all
    the references for a given predictions

    >>> predictions1 = ['It', 'is', 'a', 'guide', 'to', 'action', 'which', 'ensures', 'that', 'the', 'military', 'always', 'obeys', 'the', 'commands', 'of', 'the', 'party']
    >>> predictions2 = ['It', 'is', 'to', 'insure', 'the', 'troops', 'forever', 'hearing', 'the', 'activity', 'guidebook', 'that', 'party', 'direct']

    >>> reference1 = ['It', 'is', 'a', 'guide', 'to', 'action', 'that', 'ensures', 'that', 'the', 'military', 'will', 'forever', 'heed', 'Party', 'commands']
    >>> reference2 = ['It', 'is', 'the', 'guiding', 'principle', 'which', 'guarantees', 'the', 'military', 'forces', 'always', 'being', 'under', 'the', 'command', 'of', 'the', 'Party']
    >>> reference3 = ['It', 'is', 'the', 'practical', 'guide', 'for', 'the', 'army', 'always', 'to', 'heed', 'the', 'directions', 'of', 'the', 'party']

    >>> round(meteor_score([reference1, reference2, reference3], predictions1),4)
    0.6944

        If there is no words match during the alignment the method returns the
        score as 0. We can safely  return a zero instead of raising a
        division by zero error as no match usually implies a bad translation.

    >>> round(meteor_score([['this', 'is', 'a', 'cat']], ['non', 'matching', 'predictions']),4)
    0.0

    :param references: pre-tokenized reference sentences
    :param predictions: a pre-tokenized predictions sentence
    :param preprocess: preprocessing function (default str.lower)
    :param stemmer: nltk.stem.api.StemmerI object (default PorterStemmer())
    :param wordnet: a wordnet corpus reader object (default nltk.corpus.wordnet)
    :param alpha: parameter for controlling relative weights of precision and recall.
    :param beta: parameter for controlling shape of penalty as a function
                 of as a function of fragmentation.
    :param gamma: relative weight assigned to fragmentation penalty.
    :return: The sentence-level METEOR score.
    """
    return max(
        single_meteor_score(
            reference,
            predictions,
            preprocess=preprocess,
            stemmer=stemmer,
            wordnet=wordnet,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
        )
        for reference in references
    )


