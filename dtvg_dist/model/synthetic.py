"""The synthetic backbone of the offline demo and the tiny recipes: the
suite's word-level tokenizer and a small T5 taught the suite's rules before
prompt tuning (the tasks themselves are `dtvg_dist.tasks.synthetic`)."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dtvg_dist.tasks.synthetic import (
    DOMAINS,
    LABEL_WORDS,
    RULE_SIGNS,
    SPECS,
    rule_rows,
    vocabulary,
)

log = logging.getLogger("dtvg_dist.model.synthetic")


def ensure_tokenizer(folder: Path) -> Path:
    """Build (once) and save the suite's word-level tokenizer; returns its folder."""
    from dtvg_dist.model.toy_tokenizer import build_toy_tokenizer

    if not (folder / "tokenizer.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        build_toy_tokenizer(vocabulary(), str(folder))
    return folder


# ---------------------------------------------------------------- backbone
# A frozen random network gives a soft prompt almost nothing to steer, so the
# demo's backbone is first taught the suite's rules (as a real LM is
# pretrained before prompt tuning). Each domain of key words (sentiment,
# topic, colour) has a direction in embedding space, and an instruction is a
# sum of them, added to a PREFIX_ROWS-row prefix that sits where the soft
# prompt will: on a sentence whose key word is of domain D, +dir_D asks for
# D's plain rule, -dir_D for its swapped answers, and no dir_D component for
# nothing (the answer is a coin flip); the other domains' components, present
# at random, must not change the answer. So +v asks for sentiment, -v for
# flipped, +u (orthogonal to v) for topic, and v + u for the mixed rule of
# the two-sources target. The prefix otherwise holds word embeddings at a
# random scale plus noise, which carry no information, and the instruction
# is spread over its rows with random weights, so what counts is the
# instruction's sum over the rows: the mean row that Eq. 2 compares. Prompt
# tuning thus has to walk the prompt towards an instruction: tasks that share
# a rule walk the same way (similar TPVs), the conflicting rule the opposite
# way (negative similarity), another domain sideways; a target that needs two
# domains needs both directions, which two sources teach one each, and
# merging a source with its conflicting twin cancels the direction.
INSTRUCTIONS = RULE_SIGNS  # rule -> {domain: +1 or -1}
PREFIX_ROWS = 10  # the demo's prompt length
STRENGTH = (6.0, 24.0)  # range of each domain component's norm in the mean prefix row
NO_INSTRUCTION = 0.25  # share of pretraining examples with no component for the sentence's domain
OTHER_COMPONENT = 0.15  # chance of each other domain's component being present (to be ignored)
NOISE = 1.5  # largest std of the noise added to the prefix rows
WORD_SCALE = 1.5  # the prefix's word rows are scaled by a random factor below this
PRETRAINING_VERSION = 3  # bump when the pretraining below changes (names the cache)
_PLAIN = {next(iter(signs)): rule for rule, signs in RULE_SIGNS.items()
          if len(signs) == 1 and next(iter(signs.values())) > 0}  # domain -> its plain rule


def instruction_directions(d: int, seed: int) -> dict[str, torch.Tensor]:
    """Orthonormal directions (float32 [d]), one per domain."""
    gen = torch.Generator().manual_seed(seed + 7919)
    q, _ = torch.linalg.qr(torch.randn(d, len(DOMAINS), generator=gen, dtype=torch.float64))
    return {domain: q[:, i].float() for i, domain in enumerate(DOMAINS)}


def _pretraining_rows(n: int, seed: int) -> list[tuple[dict[str, int], str, str]]:
    """(instruction {domain: sign}, input text, answer) for n pretraining
    examples; with no component for the sentence's domain the answer is a
    coin flip. The task name in front is random, so it tells the backbone nothing."""
    rng = random.Random(seed)
    names = list(SPECS)
    out = []
    for _ in range(n):
        domain = rng.choice(list(DOMAINS))
        signs = {}
        for other in DOMAINS:
            present = rng.random() >= NO_INSTRUCTION if other == domain else rng.random() < OTHER_COMPONENT
            if present:
                signs[other] = rng.choice((1, -1))
        row = rule_rows(_PLAIN[domain], 1, rng.randrange(1 << 30))[0]
        sign = signs.get(domain, 0)
        label = row["label"] if sign > 0 else 1 - row["label"] if sign < 0 else rng.randrange(2)
        out.append((signs, f"{rng.choice(names)} sentence: {row['sentence']}", LABEL_WORDS[label]))
    return out


def instruction_vector(signs: dict[str, int], dirs: dict[str, torch.Tensor],
                       strengths: torch.Tensor | None = None) -> torch.Tensor:
    """sum over domains of sign * strength * direction ([d]; strength 1 by default)."""
    out = torch.zeros_like(next(iter(dirs.values())))
    for i, domain in enumerate(DOMAINS):
        if domain in signs:
            out = out + signs[domain] * (1.0 if strengths is None else strengths[i]) * dirs[domain]
    return out


def _pretraining_prefix(
    embed: torch.nn.Embedding, instructions: list[dict[str, int]], dirs: dict[str, torch.Tensor],
    gen: torch.Generator
) -> torch.Tensor:
    """[B, PREFIX_ROWS, d] prefixes like a soft prompt: random word rows at a
    random scale plus random noise, which carry no information, plus the
    instruction (each component at its own random strength), spread over
    the rows with random weights so that only its sum over rows (the mean
    row that Eq. 2 compares) matters."""
    b, r, d = len(instructions), PREFIX_ROWS, embed.weight.shape[1]
    ids = torch.randint(0, embed.weight.shape[0], (b, r), generator=gen)
    words = embed(ids) * torch.rand(b, 1, 1, generator=gen) * WORD_SCALE
    noise = torch.randn(b, r, d, generator=gen) * torch.rand(b, 1, 1, generator=gen) * NOISE
    weights = -torch.log(torch.rand(b, r, generator=gen))  # Dirichlet(1) after normalising
    weights = weights / weights.sum(dim=1, keepdim=True) * r
    strengths = torch.empty(b, len(DOMAINS)).uniform_(*STRENGTH, generator=gen)
    direction = torch.stack([instruction_vector(signs, dirs, strengths[i]) for i, signs in enumerate(instructions)])
    return words + noise + weights[..., None] * direction[:, None, :]


# Perturbations that stand in for another machine (bench/demo_perturb.py).
# The teaching's 600 AdamW steps are chaotic: a rounding difference of 1e-7
# grows into a different backbone (taught in float64 instead of float32, the
# weights end 17% apart and the TPVs learned on them nearly orthogonal), so
# another CPU's kernels or thread count give another backbone, and the demo
# is built to hold on any of them (docs/demo.md).
# DTVG_DEMO_TEACH_DTYPE=float64 teaches in float64 (saved as float32);
# DTVG_DEMO_WEIGHT_NOISE=1e-6 multiplies every taught weight by
# (1 + 1e-6 * N(0, 1)) before saving (generator seed DTVG_DEMO_NOISE_SEED,
# default 0). Either names the cached checkpoint, so no variant reuses another.
TEACH_DTYPE_ENV = "DTVG_DEMO_TEACH_DTYPE"
DEFAULT_TEACH_DTYPE = "float32"
WEIGHT_NOISE_ENV = "DTVG_DEMO_WEIGHT_NOISE"
NOISE_SEED_ENV = "DTVG_DEMO_NOISE_SEED"
TEACH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def teaching_perturbation() -> dict[str, str | float | int]:
    """The perturbation the environment asks for ({} for none); a bad value
    is refused naming the variable."""
    out: dict[str, str | float | int] = {}
    dtype = os.environ.get(TEACH_DTYPE_ENV) or DEFAULT_TEACH_DTYPE
    if dtype not in TEACH_DTYPES:
        raise ValueError(f"{TEACH_DTYPE_ENV}={dtype!r}: choose one of {', '.join(TEACH_DTYPES)}")
    if dtype != DEFAULT_TEACH_DTYPE:
        out["teach_dtype"] = dtype
    for env, key, kind in ((WEIGHT_NOISE_ENV, "weight_noise", float), (NOISE_SEED_ENV, "noise_seed", int)):
        text = os.environ.get(env)
        if text:
            try:
                out[key] = kind(text)
            except ValueError:
                raise ValueError(f"{env}={text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not out.get("weight_noise"):
        out.pop("weight_noise", None)
        out.pop("noise_seed", None)
    return out


def _perturbation_suffix(perturbation: dict[str, str | float | int]) -> str:
    return "".join(f"-{k}={v}" for k, v in sorted(perturbation.items()))


@torch.no_grad()
def perturb_weights(model: torch.nn.Module, relative: float, seed: int) -> None:
    """w <- w * (1 + relative * N(0, 1)), elementwise, from a fixed generator."""
    gen = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float64)
        param.copy_((param.double() * (1 + relative * noise)).to(param.dtype))


def ensure_pretrained_backbone(
    folder: Path, config: dict, steps: int = 1000, batch_size: int = 32, seed: int = 0, lr: float = 2e-3
) -> Path:
    """Build (once) a small seq2seq model from `config`, teach it the rules
    behind their instruction directions, and save it with its tokenizer as a
    local checkpoint that `from_pretrained` loads. Returns its folder:
    `folder`, or a sibling named by the perturbation the environment asks
    for (`teaching_perturbation`)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    perturbation = teaching_perturbation()
    plain = folder
    folder = folder.with_name(folder.name + _perturbation_suffix(perturbation))
    if (folder / "config.json").is_file():
        return folder
    if "weight_noise" in perturbation and "teach_dtype" not in perturbation:
        # the same teaching as the plain checkpoint's: perturb a copy of it
        with _environment_without(WEIGHT_NOISE_ENV, NOISE_SEED_ENV):
            ensure_pretrained_backbone(plain, config, steps, batch_size, seed, lr)
        model = AutoModelForSeq2SeqLM.from_pretrained(str(plain))
        perturb_weights(model, float(perturbation["weight_noise"]), int(perturbation.get("noise_seed", 0)))
        ensure_tokenizer(folder)
        _save(model, folder)
        return folder
    log.info("teaching the synthetic backbone its rules (%d steps, once; cached in %s%s)", steps, folder,
             f"; perturbed: {perturbation}" if perturbation else "")
    dtype = TEACH_DTYPES[str(perturbation.get("teach_dtype", DEFAULT_TEACH_DTYPE))]
    ensure_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    params = dict(config)
    model_type = params.pop("model_type")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(model_type, **params)).to(dtype)
        embed = model.get_input_embeddings()
        dirs = {k: v.to(dtype) for k, v in instruction_directions(embed.weight.shape[1], seed).items()}
        gen = torch.Generator().manual_seed(seed + 1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        examples = _pretraining_rows(steps * batch_size, seed)
        model.train()
        for step in tqdm(range(steps), desc="teaching the synthetic backbone", leave=False):
            batch = examples[step * batch_size : (step + 1) * batch_size]
            enc = tokenizer([t for _, t, _ in batch], return_tensors="pt", padding=True)
            labels = tokenizer([a for _, _, a in batch], return_tensors="pt", padding=True).input_ids
            labels[labels == tokenizer.pad_token_id] = -100
            prefix = _pretraining_prefix(embed, [r for r, _, _ in batch], dirs, gen).to(dtype)
            inputs = torch.cat([prefix, embed(enc.input_ids)], dim=1)
            mask = torch.cat([torch.ones(len(batch), PREFIX_ROWS, dtype=torch.long), enc.attention_mask], 1)
            loss = model(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model = model.float()
        if perturbation.get("weight_noise"):
            perturb_weights(model, float(perturbation["weight_noise"]), int(perturbation.get("noise_seed", 0)))
    _save(model, folder)
    return folder


def _save(model: torch.nn.Module, folder: Path) -> None:
    """Next to the tokenizer, through a temporary folder: config.json (what
    marks the checkpoint done) appears only with the weights."""
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(str(tmp))
    for name in tmp.iterdir():
        name.replace(folder / name.name)
    tmp.rmdir()


@contextlib.contextmanager
def _environment_without(*names: str) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
