"""Prompt modules (PT, SPoT, DTVG) and the wrapper that feeds them to a frozen backbone.

Each prompt module owns its trainable tensors, kept in fp32 whatever the
backbone dtype, and returns the [r, d] soft prompt from ``forward()``.
:class:`PromptedModel` puts that prompt in front of the token embeddings
through the public ``inputs_embeds`` API: T5 on the encoder side only, Llama
immediately before the first real token (left or right padding).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import ModelOutput

from dtvg_dist.core import check_rule, dtvg_prompt, task_similarity

IGNORE_INDEX = -100


def full_shape(t: Tensor) -> torch.Size:
    """A tensor's whole shape, also for a ZeRO-3 parameter that is partitioned
    at the moment (its ``.shape`` is then [0]; ``ds_shape`` is the real one).
    Code that reads a prompt parameter's size outside that module's forward
    (no gather hook has run: e.g. the row count before ``generate``) must ask
    this, not ``.shape``."""
    return getattr(t, "ds_shape", t.shape)


def sample_p_init(
    embedding_weight: Tensor, r: int, seed: int, top_k: int = 5000
) -> tuple[Tensor, Tensor]:
    """Shared stage-1 init: ``r`` embedding rows of distinct ids below ``min(top_k, V)``.

    Uses ``torch.randperm`` with a seeded CPU generator, so the ids are the
    same on every machine and rank (paper C.8: "randomly sampling the top 5000
    vocabulary words"). Under ZeRO-3 gather the embedding weight first.
    Returns (fp32 clone [r, d], ids [r]).
    """
    vocab = embedding_weight.shape[0]
    pool = min(top_k, vocab)
    if not 0 < r <= pool:
        raise ValueError(
            f"prompt length r={r} must be in 1..{pool} (min(top_k={top_k}, vocab={vocab}))"
        )
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    ids = torch.randperm(pool, generator=gen)[:r]
    rows = embedding_weight.detach()[ids.to(embedding_weight.device)]
    return rows.to(torch.float32).clone(), ids


def check_state(module: nn.Module, state: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """Refuse a checkpoint whose keys or shapes do not match, naming the culprit."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise KeyError(f"{type(module).__name__}: missing keys {missing}, unexpected keys {extra}")
    for k, t in expected.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise ValueError(
                f"{type(module).__name__}.{k}: checkpoint shape {tuple(state[k].shape)} "
                f"!= module shape {tuple(t.shape)}"
            )


class PromptModule(nn.Module):
    """The base of every prompt module: its param groups and its checkpointed
    state, written once (see dtvg_dist/model/methods/base.py for the contract).

    A subclass says which of its trainable parameters take the second rate
    (:meth:`second_rate_params`, e.g. DTVG's source alphas, DePT's A and B)
    and, if its checkpoint holds more than its trainable parameters,
    :meth:`state_tensors` (DTVG's fixed-group buffers). The state is keyed by
    parameter name, which the distributed layer matches."""

    first_group: str = "prompt"
    second_group: str = "second"

    def second_rate_params(self) -> list[nn.Parameter]:
        """Trainable parameters trained at the second rate (none by default)."""
        return []

    def param_groups(
        self, lr: float, source_lr: float | None = None, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """The trainable parameters at ``lr``, :meth:`second_rate_params` at
        ``source_lr`` (default ``lr``); an empty second group is left out."""
        second = {id(p) for p in self.second_rate_params()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups = [{"name": self.first_group, "params": [p for p in trainable if id(p) not in second],
                   "lr": lr, "weight_decay": weight_decay}]
        if second:
            groups.append({"name": self.second_group, "params": [p for p in trainable if id(p) in second],
                           "lr": lr if source_lr is None else source_lr, "weight_decay": weight_decay})
        return groups

    def state_tensors(self) -> dict[str, Tensor]:
        """The live tensors a checkpoint holds: the trainable parameters by name."""
        return {k: p for k, p in self.named_parameters() if p.requires_grad}

    def trainable_state(self) -> dict[str, Tensor]:
        """Copies of :meth:`state_tensors` (floating point as fp32)."""
        return {k: (t.detach().float() if t.is_floating_point() else t.detach()).clone()
                for k, t in self.state_tensors().items()}

    @torch.no_grad()
    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        own = self.state_tensors()
        check_state(self, state, own)
        for k, t in own.items():
            t.copy_(state[k].to(t.dtype))


class SoftPrompt(PromptModule):
    """Vanilla prompt tuning (PT); SPoT is this module initialised from a source prompt."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        if init.dim() != 2:
            raise ValueError(f"SoftPrompt init must be [r, d], got shape {tuple(init.shape)}")
        self.prompt = nn.Parameter(init.detach().to(torch.float32).clone())

    def forward(self, inputs_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        """The [r, d] prompt; the inputs (see PromptedModel) are not needed.
        A new tensor, not the parameter: ZeRO-3 may free the parameter's
        storage when this forward returns."""
        return self.prompt.clone()



def spot_pick_source(target_prompt: Tensor, source_prompts: Tensor) -> int:
    """SPoT (paper C.1): index of the source whose mean-pooled prompt has the
    highest cosine similarity with the target's; ties go to the lower index."""
    if source_prompts.dim() != 3 or source_prompts.shape[0] == 0:
        raise ValueError(f"source_prompts must be [n>0, r, d], got {tuple(source_prompts.shape)}")
    t = target_prompt.float().mean(dim=-2)
    s = source_prompts.float().mean(dim=-2)
    cos = F.cosine_similarity(s, t.unsqueeze(0), dim=-1)
    return int(torch.argmax(cos))  # argmax returns the first maximal index


def tpv_pick_source(target_tpv: Tensor, source_tpvs: Tensor) -> int:
    """Table 1's "TPV" row (paper 3.2, C.1): index of the source whose task
    prompt vector has the highest Eq. 2 similarity with the target's; ties
    go to the lower index. Only the metric differs from SPoT."""
    if source_tpvs.dim() != 3 or source_tpvs.shape[0] == 0:
        raise ValueError(f"source_tpvs must be [n>0, r, d], got {tuple(source_tpvs.shape)}")
    sims = task_similarity(source_tpvs.double(), target_tpv.double().unsqueeze(0))
    return int(torch.argmax(sims))


class DTVGPrompt(PromptModule):
    """Stage 2 of DTVG: P_mix = P_init + alpha_t T_t + sum_{s in S'} alpha_s T_s (Eq. 6).

    Trainable: ``target_tpv`` (init: stage-1 target TPV), ``alpha_t`` [r] and
    ``alpha_s`` [n, r] (init ones). Frozen buffers: ``p_init``, ``source_tpvs``.
    The group S' is recomputed every forward by the core; ``mask_sync`` (set
    by the distributed layer, e.g. a rank-0 broadcast) sees the mask between
    selection and merge. ``fixed=True`` keeps the group ``rule`` picks at the
    first forward for the whole run (Figure 5's "fix group"), in buffers so
    that a checkpoint restores it.
    """

    def __init__(
        self,
        p_init: Tensor,
        target_tpv: Tensor,
        source_tpvs: Tensor,
        source_names: list[str],
        rule: str = "greedy",
        fixed: bool = False,
    ) -> None:
        super().__init__()
        r, d = target_tpv.shape
        n = source_tpvs.shape[0]
        if tuple(p_init.shape) != (r, d) or tuple(source_tpvs.shape[1:]) != (r, d):
            raise ValueError(
                f"DTVGPrompt shapes disagree: p_init {tuple(p_init.shape)}, target_tpv "
                f"{(r, d)}, source_tpvs {tuple(source_tpvs.shape)}"
            )
        if len(source_names) != n:
            raise ValueError(f"{len(source_names)} source_names for {n} source TPVs")
        check_rule(rule, n)
        self.rule = rule
        self.fixed = fixed
        self.source_names = list(source_names)
        f32 = torch.float32
        self.target_tpv = nn.Parameter(target_tpv.detach().to(f32).clone())
        self.alpha_t = nn.Parameter(torch.ones(r, dtype=f32, device=target_tpv.device))
        self.alpha_s = nn.Parameter(torch.ones(n, r, dtype=f32, device=target_tpv.device))
        self.register_buffer("p_init", p_init.detach().to(f32).clone())
        self.register_buffer("source_tpvs", source_tpvs.detach().to(f32).clone())
        dev = target_tpv.device
        self.register_buffer("fixed_mask", torch.zeros(n, dtype=torch.bool, device=dev))
        self.register_buffer("fixed_mask_set", torch.zeros((), dtype=torch.bool, device=dev))
        self._fixed_ready = False  # host mirror of fixed_mask_set: no device read per step
        self.register_load_state_dict_post_hook(lambda mod, _keys: mod._refresh_fixed())
        self.mask_sync: Callable[[Tensor], Tensor] | None = None
        self.last_mask: Tensor | None = None
        self.last_sims: Tensor | None = None

    def _refresh_fixed(self) -> None:
        self._fixed_ready = bool(self.fixed_mask_set)

    def _sync(self, mask: Tensor) -> Tensor:
        """Between selection and merge: the user hook, then the ``fixed`` override."""
        if self.fixed and self._fixed_ready:
            return self.fixed_mask
        if self.mask_sync is not None:
            mask = self.mask_sync(mask)
        if self.fixed:
            with torch.no_grad():
                self.fixed_mask.copy_(mask)
                self.fixed_mask_set.fill_(True)
            self._fixed_ready = True
        return mask

    def forward(self, inputs_embeds: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        """P_mix [r, d]; the inputs (see PromptedModel) are not needed."""
        p_mix, mask, sims = dtvg_prompt(
            self.p_init,
            self.target_tpv,
            self.source_tpvs,
            self.alpha_t,
            self.alpha_s,
            rule=self.rule,
            mask_sync=self._sync,
        )
        self.last_mask = mask.detach()
        self.last_sims = sims.detach()
        return p_mix

    first_group, second_group = "target", "source_alphas"

    def second_rate_params(self) -> list[nn.Parameter]:
        """Two-speed learning rates (paper C.7): target TPV and its alphas at
        ``lr``, the source alphas at ``source_lr`` (default ``lr``)."""
        return [self.alpha_s]

    def state_tensors(self) -> dict[str, Tensor]:
        """Trainables plus the ``fixed`` group buffers (bool)."""
        return {"target_tpv": self.target_tpv, "alpha_t": self.alpha_t, "alpha_s": self.alpha_s,
                "fixed_mask": self.fixed_mask, "fixed_mask_set": self.fixed_mask_set}

    @torch.no_grad()
    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        super().load_trainable_state(state)
        self._refresh_fixed()


def _position_ids(attention_mask: Tensor) -> Tensor:
    """Positions from the mask (cumsum - 1, clamped): left pads do not shift real tokens."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class AnswerOutput(ModelOutput):
    """Output-head rows at the answer positions only, and their token-mean loss.

    ``logits`` [N, V]: one row per answer token of the batch, batch-major,
    in the model's dtype; ``targets`` [N]: the token each row predicts;
    ``keep`` [B, S]: where the rows sit (S = L + r for causal models, the
    target length for seq2seq); ``loss``: mean cross-entropy over the N rows
    (computed in at least float32), the definition of the backbone's own
    loss with labels (the mean over tokens whose label is not -100).
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    targets: Tensor | None = None
    keep: Tensor | None = None
    # With return_hidden: the last hidden states (T5: encoder, decoder; causal:
    # the one stack), the prompted attention mask and the (shifted) labels.
    hidden: tuple[Tensor, ...] | None = None
    mask_ext: Tensor | None = None
    labels_ext: Tensor | None = None


def token_mean_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` [N, V] against ``targets`` [N]; half
    precision is upcast to float32 first, as transformers' causal loss does."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, targets)


@contextlib.contextmanager
def _head_rows(head: nn.Module, keep: Tensor) -> Iterator[None]:
    """While open, the output head sees only the ``keep`` rows of its input.

    A forward pre-hook on the head *module*: the model's own forward runs as
    written (any scaling before the head, softcapping after it), and under
    ZeRO-3 DeepSpeed still gathers the head's weight in its own pre-hook.
    """

    def select(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][keep], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


class PromptedModel(nn.Module):
    """A frozen backbone with a trainable soft prompt in front of its input.

    ``answer_only_logits`` (default on; recipe key ``backbone.answer_only_logits``):
    with labels, apply the output head only where the loss reads it (the
    positions whose next token is an answer token) instead of over the whole
    [B, L + r] sequence. The loss is the same token mean; off, ``forward``
    with labels returns the backbone's own output and loss as before.
    """

    def __init__(self, backbone: Any, prompt: nn.Module, answer_only_logits: bool = True) -> None:
        super().__init__()
        if backbone.family not in ("seq2seq", "causal"):
            raise ValueError(f"unknown backbone family {backbone.family!r}")
        self.model = backbone.model
        self.prompt = prompt
        self.family: str = backbone.family
        self.answer_only_logits = answer_only_logits
        # Causal answer-only logits need transformers' boolean logits_to_keep
        # (5.x forwards that slice with slice_logits_to_keep).
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(
            self.model.forward
        ).parameters

    @property
    def is_seq2seq(self) -> bool:
        return self.family == "seq2seq"

    def _prompt(self, emb: Tensor, real: Tensor, task_ids: Tensor | None, prompt: Tensor | None) -> Tensor:
        """The prompt to insert: ``prompt`` when given (MPT's teachers), else the
        module's, told each row's task where ``task_ids`` is given (MPT's
        source training: one prompt per task)."""
        if prompt is not None:
            return prompt
        if task_ids is None:
            return self.prompt(emb, real)
        return self.prompt(emb, real, task_ids=task_ids)

    def insert_prompt(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None,
        task_ids: Tensor | None = None, prompt: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Embed the tokens (inside forward: ZeRO-3 gathers the table here) and
        put the prompt in. Returns (embeds, mask, labels) extended by r.

        The prompt module sees the token embeddings and which are real tokens
        (``prompt(embeds, real)``) and returns [r, d] or, per instance,
        [B, r, d]; a module with an ``input_update`` submodule also rewrites
        the token embeddings, given each token's index from the first real
        token (-1 on pads and prompt slots). Causal models: only the input
        tokens count, not the answer tokens that teacher forcing appends
        (label != -100), so training sees what generation sees."""
        bsz, length = input_ids.shape
        attention_mask = attention_mask.to(torch.long)
        update = getattr(self.prompt, "input_update", None)
        if self.is_seq2seq:  # encoder side only; decoder labels untouched
            emb = self.model.get_input_embeddings()(input_ids)
            real = attention_mask.bool()
            if update is not None:
                positions = torch.arange(length, device=input_ids.device).expand(bsz, -1)
                emb = update(emb, positions.masked_fill(~real, -1), length)
            prompt = self._prompt(emb, real, task_ids, prompt).to(emb.dtype)  # fp32 master -> activation dtype
            prompt_b = prompt if prompt.dim() == 3 else prompt.unsqueeze(0).expand(bsz, -1, -1)
            ones = attention_mask.new_ones(bsz, prompt_b.shape[1])
            return torch.cat([prompt_b, emb], 1), torch.cat([ones, attention_mask], 1), labels
        # Causal: output position j takes token j before the first real token f,
        # prompt row j - f inside [f, f + r), token j - r after. Right padding
        # has f = 0; left padding keeps real-token positions contiguous.
        # The shift is done on the ids (a small integer gather) and the prompt
        # goes in by whole rows (index_copy: row copies forward, a row gather
        # backward): no element-wise gather/scatter over [B, L + r, d], which
        # costs ~10 ms a step on CPU. No host reads of tensor values.
        r = self._prompt_rows()
        dev = input_ids.device
        first = attention_mask.argmax(dim=1, keepdim=True)  # [B, 1]
        j = torch.arange(length + r, device=dev).unsqueeze(0)
        in_prompt = (j >= first) & (j < first + r)  # [B, L + r]
        tok = torch.where(j < first, j, j - r).clamp(min=0)  # prompt slots: overwritten below
        emb = self.model.get_input_embeddings()(torch.gather(input_ids, 1, tok))
        mask_ext = torch.gather(attention_mask, 1, tok).masked_fill(in_prompt, 1)
        labels_ext = None
        # The prompt module sees the input, not the answer: with labels (teacher
        # forcing) the answer tokens are in the sequence, but a generation call
        # only has the source, and the prompt must not read the answer.
        real = (j >= first + r) & (mask_ext > 0)
        if labels is not None:
            labels_ext = torch.gather(labels, 1, tok).masked_fill(in_prompt, IGNORE_INDEX)
            real = real & (labels_ext == IGNORE_INDEX)
        if update is not None:
            emb = update(emb, torch.where(real, j - r - first, -1), length)
        prompt = self._prompt(emb, real, task_ids, prompt)
        d = emb.shape[-1]
        rows = torch.arange(bsz, device=dev).unsqueeze(1) * (length + r) + first
        rows = (rows + torch.arange(r, device=dev)).reshape(-1)  # [B * r] flat rows
        prompt = prompt.to(emb.dtype)
        src = (prompt if prompt.dim() == 3 else prompt.unsqueeze(0).expand(bsz, -1, -1)).reshape(bsz * r, d)
        emb_ext = emb.reshape(-1, d).index_copy(0, rows, src).view(bsz, length + r, d)
        return emb_ext, mask_ext, labels_ext

    def _prompt_rows(self) -> int:
        """r, the prompt's row count, known before the prompt is computed (a
        per-instance prompt needs the embeddings, the layout needs r first)."""
        rows = getattr(self.prompt, "prompt_rows", None)
        if rows is not None:
            return int(rows)
        for name in ("prompt", "target_prompt", "target_tpv"):
            t = getattr(self.prompt, name, None)
            if isinstance(t, Tensor):
                return int(full_shape(t)[0])
        raise AttributeError(f"{type(self.prompt).__name__} has no prompt_rows attribute")

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None, **kwargs: Any
    ) -> Any:
        """Run the backbone with the prompt.

        Without labels: the HF output, causal logits over the extended
        sequence (length L + r). With labels: an :class:`AnswerOutput` (head
        only at the answer positions) when ``answer_only_logits``, else the
        HF output with its ``.loss``."""
        if labels is not None and self.answer_only_logits:
            return self.answer_logits(input_ids, attention_mask, labels, **kwargs)
        embeds, mask, labels_ext = self.insert_prompt(input_ids, attention_mask, labels)
        if self.is_seq2seq:
            if labels_ext is not None:
                labels_ext = labels_ext.contiguous()  # T5 computes its loss with .view(-1)
            return self.model(
                inputs_embeds=embeds, attention_mask=mask, labels=labels_ext, **kwargs
            )
        return self.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=_position_ids(mask),
            labels=labels_ext,
            **kwargs,
        )

    def answer_logits(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor,
        task_ids: Tensor | None = None, prompt: Tensor | None = None,
        return_hidden: bool = False, **kwargs: Any,
    ) -> AnswerOutput:
        """Logits at the answer positions and their token-mean loss (see AnswerOutput).

        Causal: the rows are the positions whose *next* label is not -100,
        selected before the head by transformers' boolean ``logits_to_keep``
        (the model's own head, scaling and softcapping run on those rows
        only). Seq2seq: the decoder runs over the target as before; the head
        sees only the rows whose label is not -100. With
        ``answer_only_logits`` off the same rows are cut from full logits
        (a reference; same result, full cost)."""
        embeds, mask, labels_ext = self.insert_prompt(input_ids, attention_mask, labels, task_ids, prompt)
        if return_hidden:  # MPT's distillation reads the last hidden states
            kwargs["output_hidden_states"] = True
        assert labels_ext is not None
        if self.is_seq2seq:
            keep = labels_ext != IGNORE_INDEX  # [B, T]: the decoder predicts label t at t
            if "decoder_input_ids" not in kwargs:  # what the model does with labels
                kwargs["decoder_input_ids"] = self.model.prepare_decoder_input_ids_from_labels(
                    labels=labels_ext
                )
            call = {"inputs_embeds": embeds, "attention_mask": mask, **kwargs}
            if self.answer_only_logits:
                with _head_rows(self.model.get_output_embeddings(), keep):
                    out = self.model(**call)
                logits = out.logits
            else:
                out = self.model(**call)
                logits = out.logits[keep]
            hidden = (
                (out.encoder_last_hidden_state, out.decoder_hidden_states[-1]) if return_hidden else None
            )
        else:
            # Position j predicts token j + 1: keep j where label j + 1 is an answer token.
            nxt = F.pad(labels_ext[:, 1:], (0, 1), value=IGNORE_INDEX)
            keep = nxt != IGNORE_INDEX  # [B, L + r]
            call = {
                "inputs_embeds": embeds, "attention_mask": mask,
                "position_ids": _position_ids(mask), **kwargs,
            }
            if self.answer_only_logits:
                if not self._takes_logits_to_keep:
                    raise RuntimeError(
                        f"{type(self.model).__name__}.forward takes no logits_to_keep, so the "
                        "output head cannot be limited to the answer positions; set "
                        "backbone.answer_only_logits=false"
                    )
                out = self.model(**call, logits_to_keep=keep)
                logits = out.logits
            else:
                out = self.model(**call)
                logits = out.logits[keep]
            hidden = (out.hidden_states[-1],) if return_hidden else None
            labels_ext = nxt
        if logits.dim() != 2:
            raise RuntimeError(
                f"{type(self.model).__name__} returned logits of shape {tuple(logits.shape)} for "
                "answer rows, not [N, vocab]; set backbone.answer_only_logits=false"
            )
        targets = labels_ext[keep]
        return AnswerOutput(
            loss=token_mean_loss(logits, targets), logits=logits, targets=targets, keep=keep,
            hidden=hidden, mask_ext=mask if return_hidden else None,
            labels_ext=labels_ext if return_hidden else None,
        )

    @torch.no_grad()
    def generate(
        self, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int, **kw: Any
    ) -> Tensor:
        """Greedy decoding with the prompt; returns only the new tokens [B, T <= max_new_tokens].

        Causal inputs are first moved to left padding so that every row ends in
        a real token. ``use_cache=False`` is honoured: transformers forces the
        cache on for decoder-only ``inputs_embeds``, so that path recomputes the
        whole sequence per step here instead (a reference for the cached path).
        """
        kw.setdefault("do_sample", False)
        kw.setdefault("num_beams", 1)
        if self.is_seq2seq:
            embeds, mask, _ = self.insert_prompt(input_ids, attention_mask, None)
            out = self.model.generate(
                inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, **kw
            )
            return out[:, 1:]  # drop decoder_start_token_id
        # Stable sort on the mask moves pads to the front, keeping token order.
        order = torch.sort(attention_mask.to(torch.long), dim=1, stable=True).indices
        input_ids = torch.gather(input_ids, 1, order)
        attention_mask = torch.gather(attention_mask, 1, order)
        embeds, mask, _ = self.insert_prompt(input_ids, attention_mask, None)
        if not kw.pop("use_cache", True):
            return self._greedy_no_cache(embeds, mask, max_new_tokens, **kw)
        out = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=_position_ids(mask),
            max_new_tokens=max_new_tokens,
            use_cache=True,
            **kw,
        )
        # Given inputs_embeds and no input_ids, transformers (4.x and 5.x)
        # returns only the new tokens: the prompt part has no ids to return.
        return out

    def _greedy_no_cache(
        self, embeds: Tensor, mask: Tensor, max_new_tokens: int, **kw: Any
    ) -> Tensor:
        """Greedy decoding recomputing the full (prompted) sequence every step."""
        kw.pop("do_sample", None)
        kw.pop("num_beams", None)
        gen_cfg = self.model.generation_config
        eos = kw.pop("eos_token_id", gen_cfg.eos_token_id)
        pad = kw.pop("pad_token_id", gen_cfg.pad_token_id)
        if kw:
            raise TypeError(f"use_cache=False greedy decoding does not take {sorted(kw)}")
        eos_ids = torch.tensor(
            [] if eos is None else ([eos] if isinstance(eos, int) else list(eos)),
            dtype=torch.long,
            device=embeds.device,
        )
        if pad is None:
            pad = int(eos_ids[0]) if eos_ids.numel() else 0
        embed_fn = self.model.get_input_embeddings()
        bsz = embeds.shape[0]
        done = torch.zeros(bsz, dtype=torch.bool, device=embeds.device)
        new_tokens: list[Tensor] = []
        for _ in range(max_new_tokens):
            logits = self.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=_position_ids(mask),
                use_cache=False,
            ).logits[:, -1]
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            new_tokens.append(nxt)
            done = done | torch.isin(nxt, eos_ids)
            embeds = torch.cat([embeds, embed_fn(nxt).unsqueeze(1).to(embeds.dtype)], 1)
            mask = torch.cat([mask, mask.new_ones(bsz, 1)], 1)
            if bool(done.all()):
                break
        if not new_tokens:
            return embeds.new_zeros(bsz, 0, dtype=torch.long)
        return torch.stack(new_tokens, 1)
