"""What a prompt method is to the rest of the trainer.

A method is one module of this package holding a :class:`Method` subclass
(registered by name in ``__init__``) and, when it has recipe keys, a settings
dataclass that the recipe schema names after the method (``attempt:``,
``dept:``...). The pipeline asks the method, never its name, for:

- which bank entries it reads (:meth:`Method.bank_tasks`),
- the stage-2 prompt module built from those entries and the backbone
  (:meth:`Method.build`, with the facts results.json records about it),
- the learning rates of the module's two param groups (:meth:`Method.learning_rates`),
- anything it must train before stage 2 (:meth:`Method.pre_stage`, e.g. MPT's
  source training), and
- for the planner, the sizes of its tensors (:meth:`Method.prompt_state`).

The prompt module contract (what :class:`~dtvg_dist.model.prompt.PromptedModel`
calls): ``forward(inputs_embeds=None, attention_mask=None)`` returns the soft
prompt, ``[r, d]`` shared by the batch or ``[B, r, d]`` per instance
(``inputs_embeds`` [B, S, d] are the token embeddings, ``attention_mask``
[B, S] bool marks the real tokens); an optional submodule ``input_update``
called as ``input_update(inputs_embeds, positions)`` returns new token
embeddings (``positions`` [B, S]: each token's index from the first real
token, -1 where the update must not apply); ``param_groups(lr, second_lr,
weight_decay)``, ``trainable_state()`` and ``load_trainable_state(state)``,
which :class:`~dtvg_dist.model.prompt.PromptModule` implements once for all.

Methods never see the recipe when they build: the orchestration turns it
into typed settings once (:class:`RunSettings` and :meth:`Method.settings`)
and hands them in a :class:`BuildContext` or, for a pre-stage, a
:class:`PreStageContext` whose ``train_mixture`` is the trainer as a callable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from omegaconf import OmegaConf
from torch import nn

from dtvg_dist.costs import PromptState


@dataclass(frozen=True)
class RunSettings:
    """What every method reads of the recipe, typed (built once per run)."""

    target_task: str
    source_tasks: tuple[str, ...]
    prompt_length: int  # r
    seed: int

    @classmethod
    def from_recipe(cls, cfg: Any) -> RunSettings:
        return cls(str(cfg.target_task), tuple(str(t) for t in cfg.source_tasks),
                   int(cfg.prompt.length), int(cfg.seed))


class MixtureTrainer(Protocol):
    """Trains ``prompt`` on the union of ``tasks``' training examples with
    ``model_factory``'s loss and returns the run's result (``best_state``,
    ``steps``): what a pre-stage may ask of the trainer (MPT's source
    training), without the model layer holding the pipeline."""

    def __call__(
        self, *, name: str, prompt: nn.Module, tasks: list[str],
        model_factory: Callable[[Any, nn.Module, bool], nn.Module], max_steps: int, lr: float,
        extra_results: dict[str, Any] | None = None,
    ) -> Any: ...


@dataclass
class BuildContext:
    """Everything a method may build its stage-2 module from: typed settings
    (:class:`RunSettings` and the method's own, :meth:`Method.settings`), the
    bank entries, the backbone. The orchestration builds it from the recipe
    (:meth:`from_recipe`); methods never see the recipe."""

    run: RunSettings
    settings: Any  # Method.settings(cfg): e.g. DeptSettings; None for a method without keys
    entries: dict[str, Any]  # task -> BankEntry, the tasks of Method.bank_tasks
    backbone: Any  # dtvg_dist.model.backbone.Backbone (None: parameter counting)
    device: torch.device
    bank_dir: Path | None = None  # where a pre-stage left its files (MPT's shared prompt)

    @classmethod
    def from_recipe(cls, method: Method, cfg: Any, entries: dict[str, Any], backbone: Any,
                    device: torch.device, bank_dir: Path | str | None = None) -> BuildContext:
        bank = bank_dir if bank_dir is not None else cfg.get("bank_dir")
        return cls(RunSettings.from_recipe(cfg), method.settings(cfg), entries, backbone, device,
                   Path(bank) if bank else None)

    @property
    def target(self) -> Any:
        return self.entries[self.run.target_task]

    @property
    def sources(self) -> list[Any]:
        return [self.entries[name] for name in self.run.source_tasks]


@dataclass
class PreStageContext:
    """What a pre-stage (MPT's source training) works with: typed settings,
    the bank, the backbone and a :class:`MixtureTrainer`, not the pipeline."""

    run: RunSettings
    settings: Any  # Method.settings(cfg)
    bank_dir: Path
    backbone: Any
    device: torch.device
    is_main: bool  # the process that writes files
    barrier: Callable[[], None]  # every process waits here (accelerate's wait_for_everyone)
    train_mixture: MixtureTrainer


@dataclass
class Built:
    """A built stage-2 prompt module and what results.json says about it."""

    module: nn.Module
    facts: dict[str, Any] = field(default_factory=dict)


class Method:
    """One prompt method. Subclasses set the class attributes and ``build``."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # for logs and the docs
    source: ClassVar[str] = ""  # the paper (and release) it follows
    uses_sources: ClassVar[bool] = True  # reads the source tasks' bank entries
    # Whether ``forward()`` needs no inputs, so the saved ``soft_prompt`` is
    # the whole trained prompt (PEFT prompt-tuning export and the simple
    # predict path rely on that).
    static_prompt: ClassVar[bool] = True
    # The PEFT adapter type the trained prompt maps onto, or None; with None,
    # ``peft_refusal`` says why not.
    peft_adapter: ClassVar[str | None] = "PROMPT_TUNING"
    peft_refusal: ClassVar[str] = ""

    def bank_tasks(self, cfg: Any) -> list[str]:
        """The bank entries stage 2 reads (the target first)."""
        names = [cfg.target_task, *(cfg.source_tasks if self.uses_sources else [])]
        return list(dict.fromkeys(names))

    # The recipe node holding this method's keys (``attempt``, ``dept``...),
    # turned into its settings dataclass by :meth:`settings`; None: no keys.
    settings_key: ClassVar[str | None] = None

    def settings(self, cfg: Any) -> Any:
        """The method's typed settings from the recipe (its dataclass, once per
        run, at the orchestration level), or None."""
        if self.settings_key is None:
            return None
        node = cfg[self.settings_key]
        return OmegaConf.to_object(node) if OmegaConf.is_config(node) else node

    def pre_stage(self, ctx: PreStageContext) -> dict[str, Any]:
        """Work to do after stage 1 and before stage 2 (none by default).
        Returns facts for the stage-2 results.json."""
        return {}

    def pre_stage_output(self, cfg: Any, bank_dir: Any) -> Any:
        """The file :meth:`pre_stage` leaves for the bank ``bank_dir`` (a Path),
        or None when it leaves none. A grid runs the pre-stage once per such
        file (``stage=pre``) and makes the stage-2 runs that read it wait."""
        return None

    def build(self, ctx: BuildContext) -> Built:
        raise NotImplementedError

    def learning_rates(self, cfg: Any) -> tuple[float, float]:
        """The rates given to ``module.param_groups(lr, second_lr, ...)``."""
        return float(cfg.optim.lr), float(cfg.optim.source_lr)

    def prompt_state(self, cfg: Any, r: int, d: int, n_sources: int) -> PromptState:
        """Trainable / frozen tensor sizes for the launch planner."""
        return PromptState(r * d, 0, r * d)

    def pre_stage_state(self, cfg: Any, r: int, d: int, n_sources: int) -> PromptState | None:
        """Tensor sizes of the pre-stage's prompt module for the planner (None: no pre-stage)."""
        return None

    def prompt_tokens(self, cfg: Any) -> int:
        """Positions the prompt adds to every input (the planner's activations)."""
        return int(cfg.prompt.length)

    def saved_tensors(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors written to prompt.safetensors beside the trainable state:
        the final soft prompt, plus whatever :meth:`rebuild` needs."""
        with torch.no_grad():
            return {"soft_prompt": module().detach().float()}

    def rebuild(self, tensors: dict[str, torch.Tensor], cfg: Any) -> nn.Module:
        """The trained module from prompt.safetensors (for predict)."""
        from dtvg_dist.model.prompt import SoftPrompt

        return SoftPrompt(tensors["soft_prompt"])

    def describe(self, cfg: Any) -> str:
        """The method's own settings a run uses, one line (dry runs print it);
        empty when the recipe's common keys say everything."""
        return ""

    def check(self, cfg: Any) -> str | None:
        """A recipe problem specific to this method (the message), or None."""
        return None


def trainable_count(module: nn.Module) -> int:
    """Elements of the module's trainable parameters (the paper's parameter count)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
