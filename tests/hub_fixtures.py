"""Tiny copies of the 26 paper datasets, laid out as their hub repositories are.

Each entry writes Parquet files at the repository paths the hub uses
(`<config>/<split>-00000-of-00001.parquet` on `main`, `<config>/<split>/0000.parquet`
or the older `<config>/<name>-<split>.parquet` on `refs/convert/parquet`), with
the real column names and Arrow types (SQuAD's `answers` struct, MultiRC's
`idx` struct, WinoGrande's "1"/"2" answers, ReCoRD's list columns, GEM's
`references`). Splits the tasks never read (GLUE test splits with label -1,
SciTail's test split) are written too, so reading the wrong one would show.

`fake_snapshot` stands in for `huggingface_hub.snapshot_download`: it copies
the files matching `allow_patterns` from `<hub>/<repo id>/<revision>/` into
a snapshot folder named by a fake 40-hex commit, as the hub cache does.
Hold-out tasks get 1,000 + a few training rows, since the rule holds out 1,000.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MAIN = "main"
CONVERTED = "refs/convert/parquet"
S = pa.string()
I32 = pa.int32()
I64 = pa.int64()

# repo id -> revision -> relative path -> Arrow table
Files = dict[str, dict[str, dict[str, pa.Table]]]


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def _glue(files: Files, config: str, schema: pa.Schema, splits: dict[str, list[dict]], shards: int = 1) -> None:
    repo = files.setdefault("nyu-mll/glue", {}).setdefault(MAIN, {})
    for split, rows in splits.items():
        step = -(-len(rows) // shards)
        parts = [rows[i : i + step] for i in range(0, len(rows), step)] if shards > 1 else [rows]
        for i, part in enumerate(parts):
            repo[f"{config}/{split}-{i:05d}-of-{len(parts):05d}.parquet"] = _table(part, schema)


def _superglue(files: Files, config: str, schema: pa.Schema, splits: dict[str, list[dict]], old: bool = False) -> None:
    repo = files.setdefault("aps/super_glue", {}).setdefault(CONVERTED, {})
    for split, rows in splits.items():
        path = f"{config}/super_glue-{split}.parquet" if old else f"{config}/{split}/0000.parquet"
        repo[path] = _table(rows, schema)


def _main(files: Files, repo_id: str, folder: str, schema: pa.Schema, splits: dict[str, list[dict]], suffix: str = "") -> None:
    repo = files.setdefault(repo_id, {}).setdefault(MAIN, {})
    for split, rows in splits.items():
        repo[f"{folder}/{split}-00000-of-00001{suffix}.parquet"] = _table(rows, schema)


def _gem(files: Files, repo_id: str, config: str, schema: pa.Schema, splits: dict[str, list[dict]]) -> None:
    repo = files.setdefault(repo_id, {}).setdefault(CONVERTED, {})
    for split, rows in splits.items():
        repo[f"{config}/{split}/0000.parquet"] = _table(rows, schema)


HOLD = 1000  # rows the hold-out rule takes from train


def build_files() -> Files:
    files: Files = {}
    # ---- GLUE ------------------------------------------------------------------------
    pair = pa.schema([("premise", S), ("hypothesis", S), ("label", I64), ("idx", I32)])
    _glue(files, "mnli", pair, {
        "train": [{"premise": f"mnli premise {i}.", "hypothesis": f"hyp {i}.", "label": i % 3, "idx": i} for i in range(6)],
        "validation_matched": [{"premise": f"matched {i}.", "hypothesis": "h.", "label": i % 3, "idx": i} for i in range(4)]
        + [{"premise": "PROBE matched premise.", "hypothesis": "A probe.", "label": 2, "idx": 9}],
        "validation_mismatched": [{"premise": f"mismatched {i}.", "hypothesis": "h.", "label": i % 3, "idx": i} for i in range(3)],
        "test_matched": [{"premise": "unlabelled.", "hypothesis": "h.", "label": -1, "idx": 0}],
    })
    qqp = pa.schema([("question1", S), ("question2", S), ("label", I64), ("idx", I32)])
    _glue(files, "qqp", qqp, {
        "train": [{"question1": f"Question {i}?", "question2": f"Other {i}?", "label": i % 2, "idx": i} for i in range(HOLD + 8)],
        "validation": [{"question1": "PROBE how do I learn?", "question2": "", "label": 1, "idx": 0}]
        + [{"question1": f"Q {i}?", "question2": f"R {i}?", "label": i % 2, "idx": i + 1} for i in range(3)],
        "test": [{"question1": "unlabelled?", "question2": "x?", "label": -1, "idx": 0}],
    }, shards=2)
    qnli = pa.schema([("question", S), ("sentence", S), ("label", I64), ("idx", I32)])
    _glue(files, "qnli", qnli, {
        "train": [{"question": f"Q {i}?", "sentence": f"S {i}.", "label": i % 2, "idx": i} for i in range(HOLD + 2)]
        + [{"question": "PROBE when?", "sentence": "In 1999.", "label": 0, "idx": HOLD + 2}],
        "validation": [{"question": f"V {i}?", "sentence": "s.", "label": i % 2, "idx": i} for i in range(3)],
    })
    sst2 = pa.schema([("sentence", S), ("label", I64), ("idx", I32)])
    _glue(files, "sst2", sst2, {
        "train": [{"sentence": f"film {i} .", "label": i % 2, "idx": i} for i in range(HOLD + 1)],
        "validation": [{"sentence": "PROBE a charming journey . ", "label": 1, "idx": 0},
                       {"sentence": "dull .", "label": 0, "idx": 1}],
    })
    s12 = pa.schema([("sentence1", S), ("sentence2", S), ("label", I64), ("idx", I32)])
    stsb = pa.schema([("sentence1", S), ("sentence2", S), ("label", pa.float32()), ("idx", I32)])
    _glue(files, "stsb", stsb, {
        "train": [{"sentence1": f"a {i}", "sentence2": f"b {i}", "label": float(i), "idx": i} for i in range(6)],
        "validation": [{"sentence1": "PROBE A plane is taking off.", "sentence2": "An air plane is taking off.",
                        "label": 3.75, "idx": 0}]
        + [{"sentence1": f"v {i}", "sentence2": f"w {i}", "label": float(i), "idx": i + 1} for i in range(4)],
    })
    for config in ("mrpc", "rte"):
        _glue(files, config, s12, {
            "train": [{"sentence1": f"{config} one {i}.", "sentence2": f"two {i}.", "label": i % 2, "idx": i} for i in range(6)],
            "validation": [{"sentence1": f"PROBE {config} first.", "sentence2": "Second.", "label": 0, "idx": 0}]
            + [{"sentence1": f"val {i}.", "sentence2": f"v {i}.", "label": i % 2, "idx": i + 1} for i in range(4)],
            "test": [{"sentence1": "x.", "sentence2": "y.", "label": -1, "idx": 0}],
        })
    cola = pa.schema([("sentence", S), ("label", I64), ("idx", I32)])
    _glue(files, "cola", cola, {
        "train": [{"sentence": f"Sentence {i}.", "label": i % 2, "idx": i} for i in range(6)],
        "validation": [{"sentence": "PROBE Our friends won't buy this.", "label": 1, "idx": 0},
                       {"sentence": "Him bought.", "label": 0, "idx": 1}, {"sentence": "Ok.", "label": 1, "idx": 2}],
    })
    # ---- SuperGLUE (refs/convert/parquet) ---------------------------------------------
    record = pa.schema([
        ("passage", S), ("query", S), ("entities", pa.list_(S)),
        ("entity_spans", pa.struct([("text", pa.list_(S)), ("start", pa.list_(I32)), ("end", pa.list_(I32))])),
        ("answers", pa.list_(S)), ("idx", pa.struct([("passage", I32), ("query", I32)])),
    ])

    def rec(i: int, query: str = "A @placeholder fact.", answers: tuple[str, ...] = ("Kabul",)) -> dict:
        return {"passage": f"Passage {i}.\n@highlight\nHighlight {i}", "query": query,
                "entities": ["Kabul", "Paris"], "entity_spans": {"text": ["Kabul", "Paris"], "start": [0, 9], "end": [5, 14]},
                "answers": list(answers), "idx": {"passage": i, "query": i}}

    _superglue(files, "record", record, {
        "train": [rec(i) for i in range(HOLD + 2)],
        "validation": [rec(5000, "PROBE @placeholder is a city.", ("Kabul", "Paris")), rec(5001)],
        "test": [rec(6000, answers=())],
    })
    multirc = pa.schema([("paragraph", S), ("question", S), ("answer", S),
                         ("idx", pa.struct([("paragraph", I32), ("question", I32), ("answer", I32)])), ("label", I64)])
    _superglue(files, "multirc", multirc, {
        "train": [{"paragraph": f"P {i}.", "question": "Q?", "answer": f"A {i}",
                   "idx": {"paragraph": 0, "question": 0, "answer": i}, "label": i % 2} for i in range(6)],
        "validation": [{"paragraph": "Sent 1.<br><b>Sent 2: </b>Done.", "question": "PROBE what?", "answer": "Children",
                        "idx": {"paragraph": 3, "question": 7, "answer": 0}, "label": 0}]
        + [{"paragraph": "P.", "question": "Q?", "answer": f"B {i}", "idx": {"paragraph": 4, "question": 1, "answer": i},
            "label": i % 2} for i in range(3)],
    })
    boolq = pa.schema([("question", S), ("passage", S), ("idx", I32), ("label", I64)])
    _superglue(files, "boolq", boolq, {
        "train": [{"question": f"is it {i}", "passage": f"Passage {i}.", "idx": i, "label": i % 2} for i in range(6)],
        "validation": [{"question": "PROBE is barq's a pepsi product", "passage": "Barq's is owned by Coca-Cola.",
                        "idx": 0, "label": 0}]
        + [{"question": f"q {i}", "passage": "p.", "idx": i + 1, "label": 1} for i in range(3)],
        "test": [{"question": "q", "passage": "p.", "idx": 0, "label": -1}],
    })
    wic = pa.schema([("word", S), ("sentence1", S), ("sentence2", S), ("start1", I32), ("start2", I32),
                     ("end1", I32), ("end2", I32), ("idx", I32), ("label", I64)])
    _superglue(files, "wic", wic, {
        "train": [{"word": "bank", "sentence1": f"bank {i}", "sentence2": "bank", "start1": 0, "start2": 0,
                   "end1": 4, "end2": 4, "idx": i, "label": i % 2} for i in range(6)],
        "validation": [{"word": "place", "sentence1": "PROBE Do you want to come over to my place later?",
                        "sentence2": "A political system with no place for the less prominent groups.",
                        "start1": 31, "start2": 27, "end1": 36, "end2": 32, "idx": 0, "label": 0}]
        + [{"word": "w", "sentence1": "a w", "sentence2": "w b", "start1": 2, "start2": 0, "end1": 3, "end2": 1,
            "idx": i + 1, "label": 1} for i in range(3)],
    })
    wsc = pa.schema([("text", S), ("span1_index", I32), ("span2_index", I32), ("span1_text", S), ("span2_text", S),
                     ("idx", I32), ("label", I64)])
    _superglue(files, "wsc.fixed", wsc, {
        "train": [{"text": f"Mark told Pete {i} lies about himself.", "span1_index": 0, "span2_index": 6,
                   "span1_text": "Mark", "span2_text": "himself", "idx": i, "label": i % 2} for i in range(6)],
        "validation": [{"text": "PROBE Mark told Pete many lies about himself.", "span1_index": 1, "span2_index": 7,
                        "span1_text": "Mark", "span2_text": "himself", "idx": 0, "label": 1}]
        + [{"text": "A b c.", "span1_index": 0, "span2_index": 2, "span1_text": "A", "span2_text": "c.",
            "idx": i + 1, "label": 0} for i in range(3)],
    })
    cb = pa.schema([("premise", S), ("hypothesis", S), ("idx", I32), ("label", I64)])
    _superglue(files, "cb", cb, {  # the converter's older file naming
        "train": [{"premise": f"Premise {i}.", "hypothesis": f"H {i}.", "idx": i, "label": i % 3} for i in range(6)],
        "validation": [{"premise": "PROBE It was a complex language.", "hypothesis": "the language was peeled down",
                        "idx": 0, "label": 0}]
        + [{"premise": "p.", "hypothesis": f"h {i}.", "idx": i + 1, "label": i % 3} for i in range(5)],
        "test": [{"premise": "p.", "hypothesis": "h.", "idx": 0, "label": -1}],
    }, old=True)
    # ---- MRQA ---------------------------------------------------------------------------
    squad = pa.schema([("id", S), ("title", S), ("context", S), ("question", S),
                       ("answers", pa.struct([("text", pa.list_(S)), ("answer_start", pa.list_(I32))]))])

    def sq(i: int, question: str = "What?", answers: tuple[str, ...] = ("x",)) -> dict:
        return {"id": f"id{i}", "title": "T", "context": f"Context {i}.", "question": question,
                "answers": {"text": list(answers), "answer_start": [0] * len(answers)}}

    _main(files, "rajpurkar/squad", "plain_text", squad, {
        "train": [sq(i) for i in range(HOLD + 2)],
        "validation": [sq(9000, "PROBE To whom did the Virgin Mary appear?", ("Saint Bernadette Soubirous", "Bernadette")),
                       sq(9001)],
    })
    mrqa = pa.schema([("context", S), ("question", S), ("answers", pa.list_(S)), ("key", S),
                      ("labels", pa.list_(pa.struct([("start", pa.list_(I64)), ("end", pa.list_(I64))])))])

    def mq(i: int, question: str = "who?", answers: tuple[str, ...] = ("y",)) -> dict:
        return {"context": f"[PAR] ctx {i}", "question": question, "answers": list(answers), "key": f"k{i}",
                "labels": [{"start": [0], "end": [1]}]}

    for repo in ("naturalquestionsshortqa", "hotpotqa", "searchqa", "newsqa"):
        _main(files, f"lucadiliello/{repo}", "data", mrqa, {
            "train": [mq(i) for i in range(HOLD + 2)],
            "validation": [mq(9000, f"PROBE {repo} question?", ("The U.S.", "US")), mq(9001)],
        }, suffix="-0123456789abcdef")
    # ---- other ----------------------------------------------------------------------------
    wino = pa.schema([("sentence", S), ("option1", S), ("option2", S), ("answer", S)])
    _main(files, "allenai/winogrande", "winogrande_xl", wino, {
        "train": [{"sentence": f"Sarah {i} was better than Maria so _ won.", "option1": "Sarah", "option2": "Maria",
                   "answer": "1" if i % 2 else "2"} for i in range(HOLD + 2)],
        "validation": [{"sentence": "PROBE Ian volunteered to eat Dennis's menudo because _ liked tripe.",
                        "option1": "Ian", "option2": "Dennis", "answer": "1"},
                       {"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "2"}],
        "test": [{"sentence": "T _.", "option1": "x", "option2": "y", "answer": ""}],
    })
    yelp = pa.schema([("text", S), ("label", I64)])
    _main(files, "fancyzhx/yelp_polarity", "plain_text", yelp, {
        "train": [{"text": f"Review {i}.", "label": i % 2} for i in range(HOLD + 3)],
        "test": [{"text": "PROBE Contrary to other reviews, I have zero complaints.", "label": 1},
                 {"text": "Bad.", "label": 0}],
    })
    scitail = pa.schema([("sentence1_binary_parse", S), ("sentence1_parse", S), ("sentence1", S),
                         ("sentence2_parse", S), ("sentence2", S), ("annotator_labels", pa.list_(S)), ("gold_label", S)])

    def sci(s1: str, s2: str, gold: str) -> dict:
        return {"sentence1_binary_parse": "( x )", "sentence1_parse": "(ROOT x)", "sentence1": s1,
                "sentence2_parse": "(ROOT y)", "sentence2": s2, "annotator_labels": [gold], "gold_label": gold}

    _main(files, "allenai/scitail", "snli_format", scitail, {
        "train": [sci(f"Premise {i}.", f"Hyp {i}.", ("entailment", "neutral")[i % 2]) for i in range(6)],
        "validation": [sci("PROBE Pluto rotates once on its axis every 6.39 Earth days.",
                           "Earth rotates on its axis once times in one day.", "neutral")]
        + [sci(f"v {i}.", "h.", "entailment") for i in range(3)],
        "test": [sci(f"t {i}.", "h.", "neutral") for i in range(7)],
    })
    paws = pa.schema([("id", I32), ("sentence1", S), ("sentence2", S), ("label", I64)])
    _main(files, "google-research-datasets/paws", "labeled_final", paws, {
        "train": [{"id": i, "sentence1": f"one {i}", "sentence2": f"two {i}", "label": i % 2} for i in range(5)],
        "validation": [{"id": 100 + i, "sentence1": f"v {i}", "sentence2": "w", "label": i % 2} for i in range(3)],
        "test": [{"id": 200, "sentence1": "PROBE In Paris , in October 1560 , he secretly met the English ambassador .",
                  "sentence2": "In October 1560 , he secretly met with the English ambassador in Paris .", "label": 1},
                 {"id": 201, "sentence1": "a", "sentence2": "b", "label": 0}],
    })
    # ---- GEM (refs/convert/parquet) ------------------------------------------------------------
    e2e = pa.schema([("gem_id", S), ("meaning_representation", S), ("target", S), ("references", pa.list_(S))])
    _gem(files, "GEM/e2e_nlg", "default", e2e, {
        "train": [{"gem_id": f"e2e_nlg-train-{i}", "meaning_representation": f"name[Place {i}]",
                   "target": f"Place {i} is a pub.", "references": []} for i in range(5)],
        "validation": [{"gem_id": "e2e_nlg-validation-0", "meaning_representation": "name[PROBE Alimentum], area[city centre]",
                        "target": "Alimentum is in the city centre.", "references": ["Alimentum is in the city centre.", "x"]},
                       {"gem_id": "e2e_nlg-validation-1", "meaning_representation": "name[B]", "target": "B.",
                        "references": ["B."]}],
        "test": [{"gem_id": "e2e_nlg-test-0", "meaning_representation": "name[T]", "target": "T.", "references": ["T."]}],
    })
    cg = pa.schema([("gem_id", S), ("concept_set_id", I32), ("concepts", pa.list_(S)), ("target", S), ("references", pa.list_(S))])
    _gem(files, "GEM/common_gen", "default", cg, {
        "train": [{"gem_id": f"common_gen-train-{i}", "concept_set_id": i, "concepts": ["ski", f"c{i}"],
                   "target": f"Skiing {i}.", "references": []} for i in range(5)],
        "validation": [{"gem_id": "common_gen-validation-0", "concept_set_id": 0, "concepts": ["field", "look", "PROBE"],
                        "target": "The player stood in the field looking at the batter.", "references": ["a", "b"]}],
        "test": [{"gem_id": "common_gen-test-0", "concept_set_id": 1, "concepts": ["a"], "target": "", "references": []}],
    })
    web = pa.schema([("gem_id", S), ("input", pa.list_(S)), ("target", S), ("references", pa.list_(S)),
                     ("category", S), ("webnlg_id", S)])
    _gem(files, "GEM/web_nlg", "en", web, {
        "train": [{"gem_id": f"web_nlg_en-train-{i}", "input": [f"A{i} | b | c"], "target": f"A{i} b c.",
                   "references": [], "category": "Airport", "webnlg_id": f"Airport/1/Id{i}"} for i in range(5)],
        "validation": [{"gem_id": "web_nlg_en-validation-0",
                        "input": ["PROBE Aarhus | leader | Jacob Bundsgaard", "Aarhus | country | Denmark"],
                        "target": "The leader of Aarhus, Denmark is Jacob Bundsgaard.", "references": ["r"],
                        "category": "City", "webnlg_id": "City/2/Id1"}],
        "test": [{"gem_id": "web_nlg_en-test-0", "input": ["t | u | v"], "target": "t.", "references": ["t."],
                  "category": "City", "webnlg_id": "City/1/Id9"}],
    })
    return files


def write_hub(root: Path, files: Files | None = None) -> Path:
    """Write the fixture repositories under `root/<repo id>/<revision>/`."""
    for repo_id, revisions in (files or build_files()).items():
        for revision, paths in revisions.items():
            for rel, table in paths.items():
                path = root / repo_id / revision / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, path)
    return root


def fake_snapshot(hub_root: Path, cache: Path, calls: list | None = None) -> Callable[..., str]:
    """A `huggingface_hub.snapshot_download` that reads `hub_root` instead of the network."""
    from huggingface_hub.utils import filter_repo_objects

    def snapshot_download(repo_id: str, *, repo_type: str | None = None, revision: str | None = None,
                          allow_patterns: Any = None, **_: Any) -> str:
        assert repo_type == "dataset", repo_type
        revision = revision or MAIN
        if calls is not None:
            calls.append((repo_id, revision, list(allow_patterns or [])))
        source = hub_root / repo_id / revision
        if not source.is_dir():
            raise OSError(f"404: {repo_id}@{revision} not found")
        names = [p.relative_to(source).as_posix() for p in sorted(source.rglob("*")) if p.is_file()]
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        snap = cache / f"datasets--{repo_id.replace('/', '--')}" / "snapshots" / commit
        for name in filter_repo_objects(names, allow_patterns=allow_patterns):
            target = snap / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target)
        snap.mkdir(parents=True, exist_ok=True)
        return str(snap)

    return snapshot_download
