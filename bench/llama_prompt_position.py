"""How much the released Llama prompt layout differs from ours, in logits.

The released code (zpy2477/DTVG run_seq2seq.py decoder_preprocess_function,
and the soft prompt prepended to inputs_embeds in its third_party Llama)
left-pads every input to max_source_length = 256 and puts the soft prompt at
position 0, before the pads, with plain positions 0..r+255: a real token's
distance to the prompt grows with the padding, i.e. depends on the example's
length. Ours puts the prompt right before the first real token with
positions from the attention mask, so padding never moves anything.

This measures both layouts with the real Llama-3 tokenizer (shared fixtures)
on RTE inputs in the release's template, with a tiny random Llama (Llama-3's
rope_theta 500000, fp32): the answer-token log-probabilities of the release
layout against ours, and, as the control, ours with 200 left pads against
ours unpadded (which must agree to float precision).

    python bench/llama_prompt_position.py [--tokenizer DIR] [--examples 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dtvg_dist.data import encode  # noqa: E402
from dtvg_dist.tasks import get_task  # noqa: E402

RELEASE_LENGTH = 256  # options.py max_source_length (the release pads to it)
PAIRS = [
    ("The cat sat on the mat near the door.", "A cat is sitting."),
    ("Paris is the capital of France and its largest city.", "Paris is in Germany."),
    ("The company reported a loss of two million dollars in the third quarter of the year.",
     "The company lost money."),
    ("He bought apples.", "He bought fruit."),
]


def _fixture_tokenizer() -> Path:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "fixtures" / "llama3-tokenizer"
        if candidate.is_dir():
            return candidate
    raise SystemExit("no llama3-tokenizer fixture found; pass --tokenizer DIR")


def answer_logprobs(model, embeds, mask, positions, labels):
    """log p(answer token) at each answer position, [n_answer]."""
    logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[0]
    keep = labels[1:] != -100
    logp = torch.log_softmax(logits[:-1][keep].double(), -1)
    return logp, labels[1:][keep]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=100)
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(args.tokenizer or _fixture_tokenizer())
    for std in (0.02, 0.2):  # transformers' default init, and a peakier one
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                             rope_theta=500000.0, tie_word_embeddings=False, initializer_range=std)
        model = LlamaForCausalLM(config).eval()
        emb = model.get_input_embeddings()
        r = args.prompt_length
        prompt = emb.weight[torch.randint(0, 5000, (r,))].detach()  # P_init: vocabulary rows (C.8)
        pad_id = tok.eos_token_id
        rows = [{"sentence1": a, "sentence2": b, "label": i % 2}
                for i, (a, b) in enumerate(PAIRS * (args.examples // len(PAIRS) + 1))][: args.examples]
        # vary the lengths so the release's padding differs from example to example
        rows = [dict(row, sentence1=" ".join([row["sentence1"]] * (1 + i % 4))) for i, row in enumerate(rows)]
        features = encode(get_task("rte"), rows, tok, "causal", template="dtvg-release")
        kls, maxdiff, agree, control = [], 0.0, 0, 0.0
        with torch.no_grad():
            for f in features:
                ids = torch.tensor(f["input_ids"])
                labels = torch.tensor([-100] * r + f["labels"])
                t = len(ids)
                ours_e = torch.cat([prompt, emb(ids)]).unsqueeze(0)
                ours = answer_logprobs(model, ours_e, torch.ones(1, r + t, dtype=torch.long),
                                       torch.arange(r + t).unsqueeze(0), labels)[0]
                # control: ours with 200 left pads (positions from the mask: unchanged)
                n = 200
                pads = emb(torch.full((n,), pad_id))
                ctrl_e = torch.cat([pads, prompt, emb(ids)]).unsqueeze(0)
                ctrl_mask = torch.tensor([[0] * n + [1] * (r + t)])
                ctrl_pos = (ctrl_mask.cumsum(-1) - 1).clamp(min=0)
                ctrl = answer_logprobs(model, ctrl_e, ctrl_mask, ctrl_pos,
                                       torch.cat([torch.full((n,), -100), labels]))[0]
                control = max(control, (ctrl - ours).abs().max().item())
                # the release: prompt, then pads up to 256 input tokens, then the tokens; plain positions
                n_pad = max(RELEASE_LENGTH - t, 0)
                rel_e = torch.cat([prompt, emb(torch.full((n_pad,), pad_id)), emb(ids)]).unsqueeze(0)
                rel_mask = torch.tensor([[1] * r + [0] * n_pad + [1] * t])
                rel_pos = torch.arange(r + n_pad + t).unsqueeze(0)
                rel = answer_logprobs(model, rel_e, rel_mask, rel_pos,
                                      torch.cat([labels[:r], torch.full((n_pad,), -100), labels[r:]]))[0]
                kls.append((ours.exp() * (ours - rel)).sum(-1).mean().item())
                maxdiff = max(maxdiff, (ours - rel).abs().max().item())
                agree += int((ours.argmax(-1) == rel.argmax(-1)).all())
        lengths = [len(f["input_ids"]) for f in features]
        print(f"{len(features)} RTE inputs, {min(lengths)}-{max(lengths)} tokens (release pads to {RELEASE_LENGTH}), "
              f"prompt {r} rows, tiny random Llama (d=64, 2 layers, rope_theta 5e5, init std {std}), fp32")
        print(f"control, ours with 200 left pads vs unpadded: max |d log p| = {control:.2e}")
        print(f"release layout vs ours: max |d log p| = {maxdiff:.3e}, mean KL(ours||release) per answer "
              f"token = {sum(kls) / len(kls):.3e}, argmax equal at every answer token in "
              f"{agree}/{len(features)} inputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
