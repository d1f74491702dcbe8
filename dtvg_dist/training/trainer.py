"""The training loop of one run: one task, one prompt module, one output dir.

Data order is a pure function of (seed, step): the global batch of every
micro-step is a slice of a seeded stream of epoch permutations, and each rank
takes every world-size-th example of it. So a resumed run needs only the
step to find its place, and N ranks see exactly the examples one process
would. The loss is the mean over all answer tokens of the global batch
(summed per rank, divided by the global token count), so it does not depend
on how the batch is split over ranks or micro-steps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from dtvg_dist.data import collate_train, padding_id
from dtvg_dist.errors import TrainingDiverged  # noqa: F401 - raised here; its public name
from dtvg_dist.model.methods import get_method
from dtvg_dist.model.prompt import PromptedModel
from dtvg_dist.store.bank import BankError, entry_digest
from dtvg_dist.store.checkpoint import LoadedCheckpoint, TrainingState, load_latest, save_checkpoint
from dtvg_dist.store.checkpoint_slots import (
    find_checkpoint,
    mark_stopped,
    remove_checkpoints,
    stopped_by_signal,
)
from dtvg_dist.store.run_files import METRICS, RunFiles, atomic_write_text, read_jsonl
from dtvg_dist.training import faults
from dtvg_dist.training.distributed import (
    all_reduce_max,
    all_reduce_sum,
    check_launch,
    checkpoint_optimizer,
    full_trainable_state,
    gathered,
    keep_prompt_whole,
    load_trainable_state,
    mask_broadcaster,
    optimizer_for_save,
    release,
    run_facts,
    unwrapped,
    zero_stage,
)
from dtvg_dist.training.early_stopping import (
    DIVERGED,
    EARLY_STOPPING,
    MAX_STEPS,
    PREEMPTED,
    STOPPED_FILE,
    count_evaluation,
    should_stop,
)
from dtvg_dist.training.evaluation import evaluate, reference_mode
from dtvg_dist.training.profiling import step_profiler
from dtvg_dist.training.signals import Preempted, stop_request
from dtvg_dist.training.step_metrics import (
    ThroughputWindow,
    backbone_tokens,
    grad_norm,
    local_peak_memory_mb,
    run_summary,
)
from dtvg_dist.training.tracking import scalars

log = logging.getLogger("dtvg_dist.training.trainer")



@dataclass
class RunSpec:
    """What one run trains and where it writes."""

    name: str
    task: Any
    method: str
    prompt: nn.Module
    run_dir: Path
    max_steps: int
    lr: float
    source_lr: float
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]
    extra_results: dict[str, Any] = field(default_factory=dict)
    # The model the loss comes from, built as factory(backbone, prompt,
    # answer_only_logits); default PromptedModel. MPT's source training gives
    # its distillation model (a loss over student and teacher prompts).
    model_factory: Callable[[Any, nn.Module, bool], nn.Module] | None = None
    # Keep the last checkpoint's state rather than the best validation score
    # (a run without a validation split to choose by: MPT's source training).
    select_last: bool = False
    # task -> bank entry file the prompt was built from (checked on resume)
    bank_entries: dict[str, Path] = field(default_factory=dict)
    stage: int = 2  # 1: a TPV of the bank; 2: target training (optimizer settings differ)
    # (source names, their prompts [n, r, d]): log SPoT's similarity to each (Figure 1)
    similarity_sources: tuple[list[str], torch.Tensor] | None = None


@dataclass
class RunResult:
    best_score: float | None
    best_step: int | None
    best_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    best_state: dict[str, torch.Tensor]
    steps: int
    wall_time_s: float
    results: dict[str, Any]


@lru_cache(maxsize=64)
def _epoch_permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=gen).tolist())


def micro_batch_indices(micro_step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Example indices of global micro-batch `micro_step` (0-based)."""
    start = micro_step * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, n)
        out.append(_epoch_permutation(n, seed, epoch)[offset])
    return out


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> LambdaLR:
    """Linear warm-up to the base rate, then linear decay to 0 at `total`
    (transformers' `get_linear_schedule_with_warmup`, without importing the
    transformers trainer stack and its optional extras at start-up)."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return LambdaLR(optimizer, factor)


def adamw_settings(optim: Any, stage: int) -> tuple[float, float]:
    """(weight decay, eps) of the AdamW of a `stage` run: stage 2 takes
    optim.stage2_weight_decay / optim.stage2_eps where set (the released
    stage 2 runs transformers.AdamW's defaults, 0 and 1e-6), else stage 1's."""
    weight_decay, eps = float(optim.weight_decay), float(optim.eps)
    if stage == 2:
        if optim.stage2_weight_decay is not None:
            weight_decay = float(optim.stage2_weight_decay)
        if optim.stage2_eps is not None:
            eps = float(optim.stage2_eps)
    return weight_decay, eps


def answer_tokens(feature: dict[str, Any]) -> int:
    return sum(1 for label in feature["labels"] if label != -100)


class Trainer:
    """Trains one RunSpec on a prepared backbone under an Accelerator."""

    def __init__(self, cfg: Any, spec: RunSpec, backbone: Any, accelerator: Accelerator) -> None:
        self.cfg = cfg
        self.spec = spec
        self.backbone = backbone
        self.acc = accelerator
        self.files = RunFiles(spec.run_dir, enabled=accelerator.is_main_process)
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        opt = cfg.optim
        check_launch(opt.batch_size, self.world)
        if not spec.train:
            raise ValueError(f"task {spec.task.name!r} has no training examples")
        self._stop, self._stop_votes = stop_request(install=False), 0.0

    # ------------------------------------------------------------------ set-up
    def build(self) -> None:
        """Optimizer, scheduler and the prepared prompt: what `run` does before
        its first step (public so Table 9's timing can drive `train_step`)."""
        # train_step reads the stop request (SIGTERM/SIGUSR1), so build sets it
        self._stop, self._stop_votes = stop_request(), 0.0
        opt = self.cfg.optim
        self.prompt = self.spec.prompt
        if hasattr(self.prompt, "mask_sync"):
            self.prompt.mask_sync = mask_broadcaster(self.acc)
        build = self.spec.model_factory or PromptedModel
        model = build(self.backbone, self.prompt, self.cfg.backbone.answer_only_logits)
        weight_decay, eps = adamw_settings(opt, self.spec.stage)
        groups = self.prompt.param_groups(self.spec.lr, self.spec.source_lr, weight_decay)
        self.lr_names = [g["name"] for g in groups]
        optimizer = torch.optim.AdamW(groups, lr=self.spec.lr, weight_decay=weight_decay, eps=eps)
        log.info("%s: AdamW weight_decay=%g eps=%g (stage %d)", self.spec.name, weight_decay, eps,
                 self.spec.stage)
        warmup = min(opt.warmup_steps, max(self.spec.max_steps - 1, 0))
        scheduler = linear_schedule(optimizer, warmup, self.spec.max_steps)
        keep_prompt_whole(self.acc, self.prompt, self.backbone.hidden_size)
        self.model, self.optimizer, self.scheduler = self.acc.prepare(model, optimizer, scheduler)
        self.synced_gpus = zero_stage(self.acc) == 3
        self.pad_id = padding_id(self.backbone.tokenizer)
        self.prompt_length = int(getattr(self.prompt, "length", self.cfg.prompt.length))
        self.seq2seq = self.backbone.family == "seq2seq"
        self.last_samples = self.last_tokens = 0
        self.last_grad_norm: torch.Tensor | float | None = None

    def _track(self, step: int, values: dict[str, Any]) -> None:
        """The numbers of `values` to the experiment trackers as `<run name>/<key>`
        (main process only; nothing when logging.trackers is empty)."""
        if self.acc.trackers and self.acc.is_main_process:
            self.acc.log(scalars(self.spec.name, values), step=step)

    def _trainable_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.prompt.parameters() if p.requires_grad]

    # ------------------------------------------------------------------- steps
    def train_step(self, step: int, measure: bool = False) -> float:
        """One optimizer step (0-based `step`); returns the global mean loss.
        Sets `last_samples` and `last_tokens` (the global batch's examples and
        backbone tokens, counted on the host) and, with `measure`, `last_grad_norm`
        (the trainable tensors' gradient norm before clipping; only then is it read)."""
        opt = self.cfg.optim
        n = len(self.spec.train)
        micro = [
            micro_batch_indices(step * opt.grad_accum + m, opt.batch_size, n, self.cfg.seed)
            for m in range(opt.grad_accum)
        ]
        total_tokens = sum(answer_tokens(self.spec.train[i]) for batch in micro for i in batch)
        self.last_samples = sum(len(batch) for batch in micro)
        self.last_tokens = sum(
            backbone_tokens(self.spec.train[i], self.prompt_length, self.seq2seq)
            for batch in micro for i in batch
        )
        faults.before_step(step + 1, self.rank)
        loss_sum = torch.zeros((), device=self.acc.device)
        self.model.train()
        for batch_indices in micro:
            mine = [self.spec.train[i] for i in batch_indices[self.rank :: self.world]]
            local_tokens = sum(answer_tokens(f) for f in mine)
            batch = {k: v.to(self.acc.device) for k, v in collate_train(mine, self.pad_id).items()}
            with self.acc.accumulate(self.model):
                out = self.model(**batch)
                share = faults.poison_loss(out.loss, step + 1, self.rank) * (
                    local_tokens / total_tokens
                )
                # accelerate/DeepSpeed divide by grad_accum, DDP averages ranks
                self.acc.backward(share * (self.world * opt.grad_accum))
                loss_sum = loss_sum + share.detach().float()
        # The stop flag rides in the loss's all-reduce: every rank learns of a
        # signal any rank received, at the same step, with no extra collective.
        flag = torch.full_like(loss_sum, float(self._stop.requested))  # a fill, no host copy
        loss, self._stop_votes = all_reduce_sum(self.acc, torch.stack([loss_sum, flag])).tolist()
        if not math.isfinite(loss):
            last = find_checkpoint(self.spec.run_dir)
            raise TrainingDiverged(
                f"{self.spec.name}: loss is {loss} at step {step + 1}; stopped before the "
                f"optimizer step. Last good checkpoint: {last or 'none written yet'}"
            )
        self.last_grad_norm = self._clip_and_measure(measure)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _clip_and_measure(self, measure: bool) -> torch.Tensor | float | None:
        """Clip to optim.max_grad_norm; with `measure`, the norm before clipping.
        Under ZeRO-3 DeepSpeed clips inside its step (run by `backward`) and
        keeps the global norm of all partitions, which accelerate returns as a
        float (a host copy, so it is asked for on measured steps only)."""
        max_norm = self.cfg.optim.max_grad_norm
        if self.synced_gpus:
            return self.acc.clip_grad_norm_(self._trainable_params(), max_norm or 0.0) if measure else None
        if self.acc.sync_gradients and max_norm:
            norm = self.acc.clip_grad_norm_(self._trainable_params(), max_norm)
            return norm if measure else None
        return grad_norm(self._trainable_params()) if measure else None

    def _peak_memory_mb(self) -> float:
        """The largest peak memory over ranks (a collective: every rank calls it)."""
        local = torch.tensor(local_peak_memory_mb(self.acc.device), device=self.acc.device)
        return round(float(all_reduce_max(self.acc, local)), 1)

    def _log_source_similarity(self, step: int) -> None:
        """SPoT's cosine of mean-pooled prompts between the current prompt and
        each source's stage-1 prompt, as a metrics.jsonl row (Figure 1)."""
        if self.spec.similarity_sources is None:
            return
        names, sources = self.spec.similarity_sources
        with torch.no_grad():
            current = self.prompt().detach().float()
            if current.dim() == 3:  # a per-example prompt: its batch mean
                current = current.mean(dim=0)
            cos = torch.nn.functional.cosine_similarity(
                sources.float().mean(dim=-2), current.mean(dim=-2).unsqueeze(0), dim=-1
            ).cpu().tolist()
        sims = dict(zip(names, cos, strict=True))
        most = max(sims, key=lambda n: (sims[n], -names.index(n)))
        self.files.log_metrics({"step": step, "split": "source_similarity", "most_similar": most, **sims})
        self._track(step, {f"source_similarity/{n}": v for n, v in sims.items()})

    def _grouping_row(self, step: int) -> dict[str, Any] | None:
        mask = getattr(self.prompt, "last_mask", None)
        if mask is None:
            return None
        return {"step": step, "mask": mask, "sims": self.prompt.last_sims}

    def _flush_grouping(self, pending: list[dict[str, Any]]) -> int | None:
        """Write the pending grouping rows; returns the last one's group size."""
        if not pending:
            return None
        names = self.prompt.source_names
        masks = torch.stack([p["mask"] for p in pending]).cpu().tolist()
        sims = torch.stack([p["sims"] for p in pending]).float().cpu().tolist()
        rows = [
            {
                "step": p["step"],
                "group": [name for name, keep in zip(names, m, strict=True) if keep],
                "sims": dict(zip(names, s, strict=True)),
            }
            for p, m, s in zip(pending, masks, sims, strict=True)
        ]
        self.files.log_grouping(rows)
        for row in rows:
            sims = {f"similarity/{name}": sim for name, sim in row["sims"].items()}
            self._track(row["step"], {"group_size": len(row["group"]), **sims})
        pending.clear()
        return len(rows[-1]["group"])

    # -------------------------------------------------------------- evaluation
    def _evaluate(self, split: str) -> tuple[dict[str, Any], dict[str, float]]:
        """(the task's metrics, the evaluation's eval_time_s and eval_examples_per_s)."""
        features = self.spec.validation if split == "validation" else self.spec.test
        if not features:
            return {}, {}
        start = time.perf_counter()
        metrics, _ = evaluate(
            self.acc,
            unwrapped(self.acc, self.model),
            self.spec.task,
            features,
            self.backbone.tokenizer,
            self.backbone.family,
            self.cfg.eval.batch_size,
            self.cfg.eval.max_new_tokens,
            synced_gpus=self.synced_gpus,
            desc=f"{self.spec.name} {split}",
            rank_classification=self.cfg.eval.rank_classification,
            references=reference_mode(
                self.spec.task, self.cfg.eval.qa_references, self.cfg.eval.nlg_references
            ),
        )
        seconds = max(time.perf_counter() - start, 1e-9)
        return metrics, {"eval_time_s": round(seconds, 4), "eval_examples_per_s": len(features) / seconds}

    # --------------------------------------------------------------------- run
    def run(self) -> RunResult:
        set_seed(self.cfg.seed)
        self.build()
        state = TrainingState()
        best_state: dict[str, torch.Tensor] | None = None
        self.bank_sha = {task: entry_digest(path) for task, path in self.spec.bank_entries.items()}
        # A run a signal stopped resumes when rerun, resume=true or not.
        stopped = stopped_by_signal(self.spec.run_dir)
        loaded = load_latest(self.spec.run_dir) if self.cfg.resume or stopped else None
        if loaded is not None:
            self._check_bank(loaded)
            load_trainable_state(self.acc, self.prompt, loaded.trainable)
            loaded.restore(checkpoint_optimizer(self.acc, self.optimizer, self.prompt), self.scheduler)
            state, best_state = loaded.state, loaded.best_trainable
            self.files.truncate_after(state.step)
            log.info("%s: resumed from %s at step %d%s", self.spec.name, loaded.path, state.step,
                     f" (stopped there by {loaded.stopped_by})" if loaded.stopped_by else "")
        elif self.acc.is_main_process:
            for stale in ("metrics.jsonl", "grouping.jsonl"):
                (self.spec.run_dir / stale).unlink(missing_ok=True)
            remove_checkpoints(self.spec.run_dir)
        self.acc.wait_for_everyone()
        start_time = time.time()
        try:
            state, best_state, stop_reason = self._loop(state, best_state)
        except Preempted:
            self._record_stop(PREEMPTED, state.step, 75)
            raise
        except TrainingDiverged:
            self._record_stop(DIVERGED, state.step + 1, 3)
            raise
        result = self._finish(state, best_state, time.time() - start_time, stop_reason)
        release(self.acc)  # a fresh engine for the next run of this process
        return result

    def _loop(
        self, state: TrainingState, best_state: dict[str, torch.Tensor] | None
    ) -> tuple[TrainingState, dict[str, torch.Tensor] | None, str]:
        """Optimizer steps until max_steps or early stopping; (state, best, stop_reason)."""
        pending: list[dict[str, Any]] = []
        every_eval, every_log = self.cfg.eval.every_steps, self.cfg.logging.every_steps
        patience = self.cfg.eval.early_stopping_patience
        bar = tqdm(
            total=self.spec.max_steps, initial=state.step, desc=self.spec.name,
            disable=not (self.acc.is_main_process and self.cfg.logging.progress_bar),
        )
        profiler = step_profiler(bool(self.cfg.logging.profile), self.spec.run_dir,
                                 self.spec.max_steps, self.spec.name, self.acc.is_main_process)
        window, rate = ThroughputWindow(), None
        while state.step < self.spec.max_steps and not should_stop(state, patience):
            logged = (state.step + 1) % every_log == 0 or state.step + 1 == self.spec.max_steps
            loss = self.train_step(state.step, measure=logged)
            state.step += 1
            window.add(self.last_samples, self.last_tokens)
            profiler.step()
            row = self._grouping_row(state.step)
            if row is not None:
                pending.append(row)
            lrs = self.scheduler.get_last_lr()
            step_lrs = {f"lr/{name}": lr for name, lr in zip(self.lr_names, lrs, strict=True)}
            if logged:
                group_size = self._flush_grouping(pending)
                measured = {
                    **window.close(),
                    "peak_memory_mb": self._peak_memory_mb(),  # collective: every rank
                    "grad_norm": None if self.last_grad_norm is None else float(self.last_grad_norm),
                }
                rate = measured["samples_per_s"]
                if group_size is not None:
                    measured["group_size"] = group_size
                self._track(state.step, {"loss": loss, **step_lrs, **{
                    k: v for k, v in measured.items() if k != "group_size"  # tracked per step
                }})
                self.files.log_metrics({"step": state.step, "loss": loss, "lr": lrs[0], **step_lrs,
                                        **measured})
                self._log_source_similarity(state.step)
            else:
                self._track(state.step, {"loss": loss, **step_lrs})
                self.files.log_metrics({"step": state.step, "loss": loss})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", **({"samples/s": f"{rate:.1f}"} if rate else {}))
            saved = state.step % every_eval == 0 or state.step == self.spec.max_steps
            if saved:
                self._flush_grouping(pending)
                paused = time.perf_counter()
                best_state = self._eval_and_checkpoint(state, best_state)
                window.start += time.perf_counter() - paused  # evaluation is not step time
            if self._stop_votes:
                profiler.close()
                self._stop_now(state, best_state, pending, saved)
        profiler.close()
        bar.close()
        self._flush_grouping(pending)
        stop_reason = EARLY_STOPPING if should_stop(state, patience) else MAX_STEPS
        if stop_reason == EARLY_STOPPING:
            log.info("%s: early stopping after step %d: %d validations without a better score "
                     "(eval.early_stopping_patience=%s)", self.spec.name, state.step,
                     state.evals_without_improvement, patience)
        return state, best_state, stop_reason

    def _record_stop(self, reason: str, step: int, exit_code: int) -> None:
        """A run that stops unfinished writes no results.json (its presence marks
        a finished run for reproduce, report and status): `stopped.json` says why."""
        if self.acc.is_main_process:
            atomic_write_text(self.spec.run_dir / STOPPED_FILE, json.dumps(
                {"stop_reason": reason, "step": step, "exit_code": exit_code}) + "\n")

    def _eval_and_checkpoint(
        self, state: TrainingState, best_state: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor] | None:
        metrics, timing = self._evaluate("validation")
        primary = self.spec.task.primary_metric
        score = self.spec.task.selection_score(metrics, self.cfg.data.select_by)  # data.select_by
        self.files.log_metrics({"step": state.step, "split": "validation", **metrics, **timing})
        self._track(state.step, {f"validation/{k}": v for k, v in {**metrics, **timing}.items()})
        trainable = full_trainable_state(self.acc, self.prompt)  # collectives: every rank
        improved = score is not None and (state.best_score is None or score > state.best_score)
        count_evaluation(state, improved)
        if best_state is None or self.spec.select_last or improved:
            state.best_score, state.best_step, state.best_metrics = score, state.step, metrics
            best_state = trainable
        self._save(state, best_state, trainable)
        chosen_by = primary if self.cfg.data.select_by == "primary" else "mean of the metrics"
        log.info(
            "%s step %d: validation %s = %s, %s = %s (best %s at step %s)",
            self.spec.name, state.step, primary, metrics.get(primary), chosen_by, score,
            state.best_score, state.best_step,
        )
        return best_state

    def _save(
        self,
        state: TrainingState,
        best_state: dict[str, torch.Tensor] | None,
        trainable: dict[str, torch.Tensor] | None = None,
        stopped_by: str | None = None,
    ) -> None:
        """Checkpoint (collectives on every rank, the main process writes)."""
        if trainable is None:
            trainable = full_trainable_state(self.acc, self.prompt)
        optimizer = optimizer_for_save(self.acc, self.optimizer, self.prompt)
        if self.acc.is_main_process:
            self.files.sync()
            save_checkpoint(
                self.spec.run_dir,
                trainable=trainable,
                best_trainable=best_state,
                optimizer=optimizer,
                scheduler=self.scheduler,
                state=state,
                bank=self.bank_sha,
                stopped_by=stopped_by,
            )
        self.acc.wait_for_everyone()

    def _stop_now(
        self, state: TrainingState, best_state: dict[str, torch.Tensor] | None,
        pending: list[dict[str, Any]], saved: bool,
    ) -> None:
        """A stop signal reached some rank during this step: checkpoint it
        (or mark the one this step just wrote), then leave."""
        why = self._stop.name if self._stop.requested else "a signal to another rank"
        if saved:
            if self.acc.is_main_process:
                mark_stopped(self.spec.run_dir, why)
            self.acc.wait_for_everyone()
        else:
            self._flush_grouping(pending)
            self._save(state, best_state, stopped_by=why)
        where = self.spec.run_dir / "checkpoint"
        log.warning("%s: stopped by %s after step %d; checkpoint %s written, rerun to resume",
                    self.spec.name, why, state.step, where)
        raise Preempted(f"{self.spec.name}: stopped by {why} after step {state.step}; checkpoint "
                        f"{where} written; run the same command again to resume")

    def _speed_summary(self) -> dict[str, float | None]:
        """Median samples_per_s / tokens_per_s and the peak memory of every
        logged step of the run, those before a resume included (metrics.jsonl)."""
        path = self.spec.run_dir / METRICS
        rows = read_jsonl(path) if self.acc.is_main_process and path.is_file() else []
        return run_summary(rows)

    def _check_bank(self, loaded: LoadedCheckpoint) -> None:
        """Refuse to resume on a bank entry that changed since the checkpoint."""
        for task, path in self.spec.bank_entries.items():
            then, now = loaded.bank.get(task), self.bank_sha[task]
            if then is not None and then != now:
                raise BankError(
                    f"bank entry {path} changed since checkpoint {loaded.path} was written "
                    f"(sha256 {then[:12]}... then, {now[:12]}... now); restore that entry, or "
                    f"delete {self.spec.run_dir / 'checkpoint'}* to train this run from the start"
                )

    def _finish(
        self, state: TrainingState, best_state: dict[str, torch.Tensor] | None, wall: float,
        stop_reason: str = MAX_STEPS,
    ) -> RunResult:
        assert best_state is not None
        load_trainable_state(self.acc, self.prompt, best_state)
        with gathered(list(self.prompt.parameters())):  # ZeRO-3: whole tensors, every rank
            saved = get_method(self.spec.method).saved_tensors(self.prompt)  # soft_prompt and more
        test_metrics, timing = self._evaluate("test")
        self.files.log_metrics({"step": state.step, "split": "test", **test_metrics, **timing})
        self._track(state.step, {f"test/{k}": v for k, v in {**test_metrics, **timing}.items()})
        prompt_tensors = {**best_state, **saved}
        self.files.write_prompt(
            prompt_tensors,
            {"task": self.spec.task.name, "method": self.spec.method, "best_step": str(state.best_step)},
        )
        results = {
            "run": self.spec.name,
            "task": self.spec.task.name,
            "method": self.spec.method,
            "primary_metric": self.spec.task.primary_metric,
            "best_validation": state.best_metrics,
            "best_step": state.best_step,
            "test": test_metrics,
            "steps": state.step,
            "stop_reason": stop_reason,
            "wall_time_s": round(wall, 3),
            **self._speed_summary(),
            "attn_implementation": self.backbone.attn_implementation,
            "backbone": self.backbone.name,
            "dtype": str(self.backbone.dtype).replace("torch.", ""),
            "train_examples": len(self.spec.train),
            "validation_examples": len(self.spec.validation),
            "test_examples": len(self.spec.test),
            **run_facts(self.acc, self.backbone.model, self.prompt),
            **self.spec.extra_results,
        }
        self.files.sync()  # the finished run's logs, before the results that say it finished
        self.files.write_results(results)
        if self.acc.is_main_process:
            (self.spec.run_dir / STOPPED_FILE).unlink(missing_ok=True)
        return RunResult(
            best_score=state.best_score,
            best_step=state.best_step,
            best_metrics=state.best_metrics,
            test_metrics=test_metrics,
            best_state=best_state,
            steps=state.step,
            wall_time_s=wall,
            results=results,
        )
