"""Generation with a soft prompt on a real pretrained model (SmolLM2-135M,
tests/real_model.py): the KV-cached greedy decoding that evaluation runs gives,
token for token, what recomputing the whole prompted sequence gives, on a
left-padded batch of rows of different lengths; and the encoded examples hold
what the tokenizer gives (no BOS added by this tokenizer, the answer masked in
the labels only after the source)."""

from __future__ import annotations

import pytest
import torch

from dtvg_dist.data import DataSettings
from dtvg_dist.data.encoding import collate_generate, generation_padding_side, padding_id
from dtvg_dist.data.module import TaskData
from dtvg_dist.model.backbone import BackboneSettings, load_backbone
from dtvg_dist.model.prompt import PromptedModel, SoftPrompt, sample_p_init
from dtvg_dist.tasks.synthetic import register_synthetic_tasks

pytestmark = pytest.mark.slow
R = 8


@pytest.fixture(scope="module")
def real(smollm2):
    backbone = load_backbone(BackboneSettings(name_or_path=str(smollm2)), device="cpu")
    weight = backbone.model.get_input_embeddings().weight
    p_init, _ = sample_p_init(weight, R, seed=3)
    noise = torch.randn(p_init.shape, generator=torch.Generator().manual_seed(4)) * weight.std()
    register_synthetic_tasks()
    data = TaskData("syn_target", DataSettings.coerce({}), backbone.tokenizer, backbone.family, seed=42)
    model = PromptedModel(backbone, SoftPrompt(p_init + noise)).eval()
    return backbone, model, list(data.splits()["test"])[:12]


def test_cached_greedy_generation_equals_recomputing_the_sequence(real):
    backbone, model, features = real
    batch = collate_generate(features, padding_id(backbone.tokenizer), generation_padding_side("causal"))
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # padded rows: positions and the cache must follow them
    with torch.no_grad():
        cached = model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=8)
        full = model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=8,
                              use_cache=False)
    assert cached.tolist() == full.tolist()
    assert cached.shape[1] > 1 and len({tuple(row) for row in cached.tolist()}) > 1  # not one token


def test_examples_hold_the_tokenizers_ids_and_mask_only_the_source(real):
    backbone, _, features = real
    tok = backbone.tokenizer
    assert tok("the cat").input_ids[0] != tok.bos_token_id  # SmolLM2's tokenizer adds no BOS
    for f in features:
        labels, ids = f["labels"], f["input_ids"]
        answer = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        assert labels[: len(ids) - len(answer)] == [-100] * (len(ids) - len(answer))  # source masked
        assert answer[-1] == tok.eos_token_id and tok.decode(answer[:-1]).strip() in ("yes", "no")
