"""Each task formats a realistic row in its hub schema into ATTEMPT's input and target."""

from __future__ import annotations

import pytest

from dtvg_dist.tasks import get_task

MARY = "Architecturally, the school has a Catholic character. Atop the Main Building's gold dome is a golden statue of the Virgin Mary."

# name -> (row in the hub schema, expected source, expected target, expected reference)
CASES = {
    "mnli": (
        {"premise": "Conceptually cream skimming has two basic dimensions - product and geography.",
         "hypothesis": "Product and geography are what make cream skimming work.", "label": 1, "idx": 0},
        "mnli premise: Conceptually cream skimming has two basic dimensions - product and geography. "
        "hypothesis: Product and geography are what make cream skimming work.",
        "1", "1",
    ),
    "qqp": (
        {"question1": "How is the life of a math student? Could you describe your own experiences?",
         "question2": "Which level of prepration is enough for the exam jlpt5?", "label": 0, "idx": 0},
        "qqp question1: How is the life of a math student? Could you describe your own experiences? "
        "question2: Which level of prepration is enough for the exam jlpt5?",
        "0", "0",
    ),
    "qnli": (
        {"question": "When did the third Digimon series begin?",
         "sentence": "Unlike the two seasons before it, Digimon Tamers takes a darker approach.", "label": 1, "idx": 0},
        "qnli question: When did the third Digimon series begin? "
        "sentence: Unlike the two seasons before it, Digimon Tamers takes a darker approach.",
        "1", "1",
    ),
    "sst2": (
        {"sentence": "it 's a charming and often affecting journey . ", "label": 1, "idx": 0},
        "sst2 sentence: it 's a charming and often affecting journey . ",
        "1", "1",
    ),
    "stsb": (
        {"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.", "label": 3.75, "idx": 0},
        "stsb sentence1: A plane is taking off. sentence2: An air plane is taking off.",
        "3.8", "3.75",
    ),
    "mrpc": (
        {"sentence1": 'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
         "sentence2": 'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .',
         "label": 1, "idx": 0},
        'mrpc sentence1: Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence . '
        'sentence2: Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .',
        "1", "1",
    ),
    "rte": (
        {"sentence1": "No Weapons of Mass Destruction Found in Iraq Yet.",
         "sentence2": "Weapons of Mass Destruction Found in Iraq.", "label": 1, "idx": 0},
        "rte sentence1: No Weapons of Mass Destruction Found in Iraq Yet. sentence2: Weapons of Mass Destruction Found in Iraq.",
        "1", "1",
    ),
    "cola": (
        {"sentence": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1, "idx": 0},
        "cola sentence: Our friends won't buy this analysis, let alone the next one we propose.",
        "1", "1",
    ),
    "record": (
        {"passage": "The harrowing stories of women locked up for 'moral crimes' in Afghanistan have been revealed."
                    "\n@highlight\nThe stories were revealed in a documentary\n@highlight\nThey include a 19-year-old mother",
         "query": "The documentary was made in @placeholder",
         "entities": ["Afghanistan", "Kabul"],
         "entity_spans": {"text": ["Afghanistan", "Kabul"], "start": [62, 0], "end": [73, 5]},
         "answers": ["Afghanistan", "Afghanistan"], "idx": {"passage": 0, "query": 0}},
        "record query: The documentary was made in @placeholder entities: Afghanistan, Kabul passage: "
        "The harrowing stories of women locked up for 'moral crimes' in Afghanistan have been revealed. "
        "The stories were revealed in a documentary. They include a 19-year-old mother",
        "Afghanistan", ["Afghanistan", "Afghanistan"],
    ),
    "multirc": (
        {"paragraph": "While this process moved along, diplomacy continued its rounds.<br><b>Sent 2: </b>"
                      "Direct pressure on the Taliban had proved unsuccessful.",
         "question": "What did the high-level effort to persuade Pakistan include?",
         "answer": "Children, Gerd, or Dorian Popa", "idx": {"paragraph": 3, "question": 7, "answer": 0}, "label": 0},
        "multirc question: What did the high-level effort to persuade Pakistan include? "
        "answer: Children, Gerd, or Dorian Popa paragraph: While this process moved along, diplomacy continued "
        "its rounds. Sent 2: Direct pressure on the Taliban had proved unsuccessful.",
        "0", "0\t3-7",
    ),
    "boolq": (
        {"question": "do iran and afghanistan speak the same language",
         "passage": "Persian language -- Persian, also known by its endonym Farsi, is one of the Western Iranian languages.",
         "idx": 0, "label": 1},
        "boolq question: do iran and afghanistan speak the same language passage: Persian language -- Persian, "
        "also known by its endonym Farsi, is one of the Western Iranian languages.",
        "1", "1",
    ),
    "wic": (
        {"word": "place", "sentence1": "Do you want to come over to my place later?",
         "sentence2": "A political system with no place for the less prominent groups.",
         "start1": 31, "start2": 27, "end1": 36, "end2": 32, "idx": 0, "label": 0},
        "wic sentence1: Do you want to come over to my place later? "
        "sentence2: A political system with no place for the less prominent groups. word: place",
        "0", "0",
    ),
    "wsc": (
        {"text": "Mark told Pete many lies about himself, which Pete included in his book. He should have been more truthful.",
         "span1_index": 0, "span2_index": 13, "span1_text": "Mark", "span2_text": "He", "idx": 0, "label": 1},
        "wsc text: * Mark * told Pete many lies about himself, which Pete included in his book. # He # should have been more truthful.",
        "1", "1",
    ),
    "cb": (
        {"premise": "It was a complex language. Not written down but handed down.",
         "hypothesis": "the language was peeled down", "idx": 0, "label": 2},
        "cb premise: It was a complex language. Not written down but handed down. hypothesis: the language was peeled down",
        "2", "2",
    ),
    "squad": (
        # rajpurkar/squad: answers is a struct of lists (dataset card).
        {"id": "5733be284776f41900661182", "title": "University_of_Notre_Dame", "context": MARY,
         "question": "What is atop the Main Building?",
         "answers": {"text": ["a golden statue of the Virgin Mary"], "answer_start": [92]}},
        "squad question: What is atop the Main Building ? context: Architecturally , the school has a Catholic "
        "character . Atop the Main Building ' s gold dome is a golden statue of the Virgin Mary .",
        "a golden statue of the Virgin Mary", ["a golden statue of the Virgin Mary"],
    ),
    "nq": (
        {"context": "<P> Zachary Taylor was the 12th President of the United States . </P>",
         "question": "who was the 12th president of the united states", "answers": ["Zachary Taylor"],
         "key": "k1", "labels": [{"start": [4], "end": [17]}]},
        "nq question: who was the 12th president of the united states context: < P > Zachary Taylor was the "
        "12th President of the United States . < / P >",
        "Zachary Taylor", ["Zachary Taylor"],
    ),
    "hotpotqa": (
        {"context": "[PAR] [TLE] Scott Derrickson [SEP] Scott Derrickson (born July 16, 1966) is an American director.",
         "question": "Were Scott Derrickson and Ed Wood of the same nationality?", "answers": ["yes"],
         "key": "k2", "labels": []},
        "hotpotqa question: Were Scott Derrickson and Ed Wood of the same nationality ? context: [ PAR ] [ TLE ] "
        "Scott Derrickson [ SEP ] Scott Derrickson ( born July 16 , 1966 ) is an American director .",
        "yes", ["yes"],
    ),
    "searchqa": (
        {"context": "[DOC] [TLE] McDonald's history [PAR] In 1963 McDonald's served its billionth burger.",
         "question": "In 1963, live on TV, this company served its billionth burger",
         "answers": ["McDonald's", "McDonalds"], "key": "k3", "labels": []},
        "searchqa question: In 1963 , live on TV , this company served its billionth burger context: [ DOC ] [ TLE ] "
        "McDonald ' s history [ PAR ] In 1963 McDonald ' s served its billionth burger .",
        "McDonald ' s", ["McDonald ' s", "McDonalds"],
    ),
    "newsqa": (
        {"context": "NEW DELHI, India (CNN) -- A high court on Friday acquitted a businessman facing the death sentence.",
         "question": "What was the businessman facing?", "answers": ["the death sentence"], "key": "k4", "labels": []},
        "newsqa question: What was the businessman facing ? context: NEW DELHI , India ( CNN ) - - A high court on "
        "Friday acquitted a businessman facing the death sentence .",
        "the death sentence", ["the death sentence"],
    ),
    "winogrande": (
        {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
         "option1": "Sarah", "option2": "Maria", "answer": "1"},
        "winogrande sentence: Sarah was a much better surgeon than Maria so _ always got the harder cases. "
        "option0: Sarah option1: Maria",
        "0", "0",
    ),
    "yelp_polarity": (
        {"text": "Unfortunately, the frustration of being Dr. Goldberg's patient is a repeat of my experience.", "label": 0},
        "yelp_polarity sentence: Unfortunately, the frustration of being Dr. Goldberg's patient is a repeat of my experience.",
        "0", "0",
    ),
    "scitail": (
        {"sentence1_binary_parse": "( ( Pluto rotates ) )", "sentence2_parse": "(ROOT (S ...))",
         "sentence1": "Pluto rotates once on its axis every 6.39 Earth days;",
         "sentence2": "Earth rotates on its axis once times in one day.",
         "annotator_labels": ["neutral"], "gold_label": "neutral"},
        "scitail premise: Pluto rotates once on its axis every 6.39 Earth days; "
        "hypothesis: Earth rotates on its axis once times in one day.",
        "1", "1",
    ),
    "paws": (
        {"id": 1, "sentence1": "In Paris , in October 1560 , he secretly met the English ambassador .",
         "sentence2": "In October 1560 , he secretly met with the English ambassador in Paris .", "label": 1},
        "paws sentence1: In Paris , in October 1560 , he secretly met the English ambassador . "
        "sentence2: In October 1560 , he secretly met with the English ambassador in Paris .",
        "1", "1",
    ),
    "e2e_nlg": (
        {"gem_id": "e2e_nlg-train-0", "gem_parent_id": "e2e_nlg-train-0",
         "meaning_representation": "name[The Vaults], eatType[pub], priceRange[more than £30], near[Café Adriatic]",
         "target": "The Vaults pub near Café Adriatic has prices starting at £30.", "references": []},
        "e2e_nlg meaning_representation: name[The Vaults], eatType[pub], priceRange[more than £30], near[Café Adriatic]",
        "The Vaults pub near Café Adriatic has prices starting at £30.",
        "The Vaults pub near Café Adriatic has prices starting at £30.",
    ),
    "common_gen": (
        {"gem_id": "common_gen-train-0", "gem_parent_id": "common_gen-train-0", "concept_set_id": 0,
         "concepts": ["mountain", "ski", "skier"], "target": "Skier skis down the mountain", "references": []},
        "common_gen concepts: mountain, ski, skier",
        "Skier skis down the mountain", "Skier skis down the mountain",
    ),
    "web_nlg": (
        {"gem_id": "web_nlg_en-train-0", "gem_parent_id": "web_nlg_en-train-0",
         "input": ["Aarhus | leaderName | Jacob_Bundsgaard", "Aarhus | country | Denmark"],
         "target": "Jacob Bundsgaard leads Aarhus, Denmark.", "references": [], "category": "City", "webnlg_id": "Id1"},
        "web_nlg triples: Aarhus | leaderName | Jacob_Bundsgaard && Aarhus | country | Denmark",
        "Jacob Bundsgaard leads Aarhus, Denmark.", "Jacob Bundsgaard leads Aarhus, Denmark.",
    ),
}


def test_every_builtin_task_has_a_case():
    from dtvg_dist.tasks import TASKS, get_task

    builtin = {name for name in TASKS if get_task(name).builtin_rows is None}
    assert builtin == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_format_and_reference(name):
    row, source, target, reference = CASES[name]
    task = get_task(name)
    assert task.format(row) == (source, target)
    assert task.reference(row) == reference


@pytest.mark.parametrize("name", sorted(CASES))
def test_row_passes_its_schema(name):
    from dtvg_dist.tasks.schema import check_row

    task = get_task(name)
    good, column, problem = check_row(CASES[name][0], task.columns, task.num_labels)
    assert (column, problem) == (None, None) and good is not None


@pytest.mark.parametrize("name", sorted(CASES))
def test_gold_target_scores_perfectly(name):
    """The target `format` produces, fed back as a prediction, gets the best score."""
    row, _, target, _ = CASES[name]
    task = get_task(name)
    scores = task.score([target, target], [task.reference(row)] * 2)
    assert scores["invalid"] == 0
    if task.kind == "regression":  # two identical points: correlation undefined -> 0
        return
    if task.primary_metric == "matthews":  # one class only: MCC undefined -> 0
        assert scores["matthews"] == 0.0
        return
    if name in ("qqp", "multirc"):  # gold is the negative class: F1 of the positive class is 0
        assert scores.get("accuracy", scores.get("em")) == pytest.approx(100.0)
        assert scores.get("f1", scores.get("f1a")) == 0.0
        return
    assert scores[task.primary_metric] == pytest.approx(100.0)


def test_stsb_rounds_to_nearest_fifth():
    task = get_task("stsb")
    base = {"sentence1": "a", "sentence2": "b"}
    # 2.5 * 5 = 12.5 is a tie: round half to even, like T5's np.round.
    assert [task.format({**base, "label": x})[1] for x in (0.0, 0.5, 1.35, 2.5, 4.95, 5.0)] == [
        "0.0", "0.4", "1.4", "2.4", "5.0", "5.0",
    ]


def test_wsc_pronoun_before_noun():
    """T5's example: the noun mark shifts nothing before it."""
    row = {"text": "This is a test sentence .", "span1_text": "test", "span1_index": 3,
           "span2_text": "This", "span2_index": 0, "label": 0}
    assert get_task("wsc").format(row)[0] == "wsc text: # This # is a * test * sentence ."


def test_wsc_span_with_regex_characters():
    row = {"text": "The (big) dog bit him.", "span1_text": "(big) dog", "span1_index": 1,
           "span2_text": "him.", "span2_index": 4, "label": 1}
    assert get_task("wsc").format(row)[0] == "wsc text: The * (big) dog * bit # him. #"
