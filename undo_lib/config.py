"""Typed, strict configuration read from ``params.yaml``.

Every knob that changes a result lives in ``params.yaml``. This module turns the file into frozen
dataclasses. Before any compute runs, it rejects unknown keys, missing keys, wrong types and
impossible values, and each error names the dotted key, the value and the fix.

``params.yaml`` has a ``shared`` section and one section per kind of stage. The stage sections are
listed in ``PER_SETTING_SECTIONS`` and keyed by setting name (``arithmetic``, ``language``). The
``data`` and ``evaluate`` sections have a different shape per setting, and every other section
has one shape.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SETTINGS = ("arithmetic", "language")
# Top-level sections keyed by setting name
PER_SETTING_SECTIONS = ("data", "tokenizer", "model", "pretrain", "unlearn", "distill", "relearn", "evaluate",
                        "figures")


class ParamsError(ValueError):
    """A value in params.yaml is unknown, missing, mistyped or out of range."""


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class SharedParams:
    seed: int = 0  # seed of the data stage and of the evaluation sets
    seeds: tuple[int, ...] = (0,)  # training seeds: every stage after the data stage runs once per seed
    settings: tuple[str, ...] = ("arithmetic",)  # settings the pipeline runs
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when available
    torch_threads: int = 0  # intra-op CPU threads; 0 keeps torch's default
    tf32: bool = False  # CUDA only: TF32 matmuls and convolutions (faster, about 3 fewer significant digits)
    check_memory: bool = True  # stop a training stage early when its estimated peak memory exceeds what is free
    # Processes of each training stage: 1 trains in the notebook's process. N > 1 starts N data-parallel
    # processes with accelerate launch: one per GPU on CUDA, gloo on the CPU (undo_lib.distributed)
    num_processes: int = 1
    # With num_processes > 1, ddp keeps a full copy of the weights in every process. fsdp shards them
    # (PyTorch FSDP2), so every process also evaluates. Ignored with one process
    distributed: Literal["ddp", "fsdp"] = "ddp"


@dataclass(frozen=True)
class ArithmeticDataParams:
    word_problem_fraction: float = 0.5  # share of arithmetic documents that are word problems
    english_fraction: float = 0.1  # share of documents in the full mixture that are English text
    english_max_chars: int = 200  # English paragraphs are cut at a word boundary below this
    english_validation_fraction: float = 0.1  # English documents held out for the retain CE
    seq_len: int = 64  # tokens per packed training sequence
    pretrain_documents: int = 200_000  # documents in each pretraining mixture file
    distill_documents: int = 100_000  # documents in the distillation mixture (all four ops)
    unlearn_documents: int = 20_000  # documents in each of the forget and retain unlearning sets
    relearn_documents: int = 20_000  # forget-domain documents for the relearning attack
    eval_prompts: int = 100  # prompts per op x {equation, word problem}
    eval_seed: int = 42  # seed of the evaluation sets


@dataclass(frozen=True)
class OfflineSourceParams:
    """Real English and Korean text without a dataset hub: Debian documentation packages."""

    cache_dir: str = "~/.cache/undo/debian"  # where `apt-get download` puts the .deb files
    packages: dict[str, str] = field(default_factory=lambda: {  # Debian package name -> pinned version
        "libreoffice-help-ko": "4:7.4.7-1+deb12u14",
        "debian-faq-ko": "11.1",
        "debian-handbook": "11.20220922",
        "debian-faq": "11.1",
    })
    include_python_docs: bool = True  # add the English topics bundled with Python (pydoc_data)


@dataclass(frozen=True)
class HubDatasetParams:
    """One streamed Hugging Face dataset (``datasets.load_dataset(path, name, split, streaming=True)``)."""

    path: str = ""
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    revision: str | None = None  # dataset revision (commit or tag); None reads the latest
    max_chars: int = 5_000_000  # stop streaming once this many characters are kept


@dataclass(frozen=True)
class HubSourceParams:
    english: HubDatasetParams = field(default_factory=lambda: HubDatasetParams(
        path="HuggingFaceFW/fineweb-edu", name="sample-10BT"))
    korean: HubDatasetParams = field(default_factory=lambda: HubDatasetParams(
        path="HuggingFaceFW/fineweb-2", name="kor_Hang"))


@dataclass(frozen=True)
class LocalSourceParams:
    """User-supplied .jsonl (one ``text`` field per line) or .txt (blank-line separated) files."""

    english: tuple[str, ...] = ()
    korean: tuple[str, ...] = ()


@dataclass(frozen=True)
class LanguageDataParams:
    source: Literal["offline", "hub", "local"] = "offline"  # where the English and Korean text comes from
    offline: OfflineSourceParams = field(default_factory=OfflineSourceParams)
    hub: HubSourceParams = field(default_factory=HubSourceParams)
    local: LocalSourceParams = field(default_factory=LocalSourceParams)
    max_document_chars: int = 400  # documents are cut into chunks of at most this many characters
    min_hangul_share: float = 0.3  # a Korean line is kept when this share of its characters is Hangul
    validation_fraction: float = 0.05  # documents per language held out for the CE metrics
    seq_len: int = 128  # tokens per packed training sequence
    korean_fraction: float = 0.5  # share of Korean documents in the full and distillation mixtures
    pretrain_documents: int = 20_000  # documents in each pretraining mixture file
    distill_documents: int = 10_000  # documents in the distillation mixture
    unlearn_documents: int = 2_000  # documents in each of the forget (Korean) and retain (English) sets
    relearn_documents: int = 5_000  # Korean documents for the relearning attack


class _SettingSections:
    """Mapping-style access to a section whose entries differ in shape per setting."""

    def __getitem__(self, setting: str):
        return getattr(self, setting)

    def __contains__(self, setting: str) -> bool:
        return getattr(self, setting, None) is not None


@dataclass(frozen=True)
class DataSections(_SettingSections):
    """The ``data`` section: one entry per setting, each with its own shape."""

    arithmetic: ArithmeticDataParams | None = None
    language: LanguageDataParams | None = None


@dataclass(frozen=True)
class TokenizerParams:
    vocab_size: int = 512  # byte-level BPE vocabulary, special tokens included
    min_frequency: int = 2  # BPE merges need at least this many occurrences
    training_documents: int = 50_000  # documents of the full mixture the BPE is trained on


@dataclass(frozen=True)
class ModelParams:
    """Gemma2 shape; fields not listed keep transformers' Gemma2Config defaults."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 512
    query_pre_attn_scalar: int = 32  # Gemma-2-2B uses 256; 1/sqrt(head_dim) scaling needs head_dim
    attn_logit_softcapping: float = 50.0
    final_logit_softcapping: float = 30.0
    sliding_window: int = 128
    max_position_embeddings: int = 128


@dataclass(frozen=True)
class TrainParams:
    """Knobs of the shared training loop (undo_lib.train)."""

    steps: int = 100  # optimizer steps (a maximum where a stop rule applies)
    batch_size: int = 32  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float | None = None  # peak learning rate; relearning takes its LRs from relearn.lrs
    min_lr: float | None = None  # final LR of the cosine decay; null means equal to lr (constant)
    warmup_steps: int = 0  # linear warmup from 0 to lr
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # gradient-norm clipping; 0 disables it
    loss_positions: Literal["all", "answers"] = "all"  # answers: arithmetic answer tokens only
    eval_every: int = 0  # evaluate every N steps (0: only at the start and the end)
    checkpoint_every: int = 0  # save a resumable checkpoint every N steps and at the end (0: off)
    sam_rho: float = 0.0  # SAM radius, set by the unlearn section's SAM sweep; 0 everywhere in params.yaml
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: forward passes under bfloat16 autocast, fp32 weights
    gradient_checkpointing: bool = False  # recompute activations in the backward pass to save memory
    eval_steps: tuple[int, ...] = ()  # evaluate at these steps too (WMDP relearning: 10, 25, 50, 150, 500)


METHOD_NAMES = ("GradDiff", "MaxEnt", "RMU")  # unlearning losses (undo_lib.methods)
RUN_NAMES = (*METHOD_NAMES, "SAM", "RepNoise")  # unlearning sweeps: the methods and the two robust baselines


@dataclass(frozen=True)
class GradDiffParams:
    retain_weight: float = 1.0  # the paper's alpha in -CE(forget) + alpha * CE(retain)
    lrs: tuple[float, ...] = (1e-3,)  # LR sweep, one unlearning run each


@dataclass(frozen=True)
class MaxEntParams:
    retain_weight: float = 1.0  # weight of the retain CE next to KL(uniform || p) on forget data
    repnoise_alpha: float = 0.0  # RepNoise: weight of -log(1 + logit-lens CE on forget data)
    repnoise_beta: float = 0.0  # RepNoise: weight of the MMD between forget MLP outputs and Gaussian noise
    lrs: tuple[float, ...] = (1e-3,)


@dataclass(frozen=True)
class RMUParams:
    layers: tuple[int, ...] = (1, 2)  # layers whose mlp.down_proj trains; every other weight is frozen
    hidden_layer: int = 3  # index into hidden_states (0: embeddings, i: output of layer i - 1) that is steered
    steering_coefficient: float = 6.0  # c in MSE(h_forget, c * u)
    control_vector: Literal["gaussian", "uniform"] = "gaussian"  # u: normalised randn (paper) or rand (original RMU)
    retain_weight: float = 0.0  # weight of MSE(h_retain, frozen model's h_retain); paper: 0 here, > 0 on WMDP
    lrs: tuple[float, ...] = (1e-3,)


@dataclass(frozen=True)
class SAMParams:
    """The SAM baseline: a method's loss, trained with sharpness-aware minimisation."""

    method: Literal["GradDiff", "MaxEnt", "RMU"] = "MaxEnt"  # whose loss and params SAM wraps
    rho: float = 0.05  # SAM radius
    lrs: tuple[float, ...] = (1e-3,)


@dataclass(frozen=True)
class RepNoiseParams:
    """The RepNoise baseline: MaxEnt (with MaxEnt's retain_weight) plus the RepNoise loss."""

    alpha: float = 1.0  # weight of -log(1 + logit-lens CE on forget data)
    beta: float = 0.001  # weight of the noise MMD
    lrs: tuple[float, ...] = (1e-3,)


@dataclass(frozen=True)
class TeacherRuleParams:
    """The rule that picks one run of each method's LR sweep as the teacher later stages distill."""

    # most_forgetting: among runs that keep min_retain_fraction of the full model's retain
    # performance (above chance), the one whose forget performance is lowest; fixed_lr: lrs[method]
    rule: Literal["most_forgetting", "fixed_lr"] = "most_forgetting"
    min_retain_fraction: float = 0.8
    lrs: dict[str, float] = field(default_factory=dict)  # fixed_lr only: method name -> a LR of its sweep


@dataclass(frozen=True)
class UnlearnParams:
    GradDiff: GradDiffParams = field(default_factory=GradDiffParams)
    MaxEnt: MaxEntParams = field(default_factory=MaxEntParams)
    RMU: RMUParams = field(default_factory=RMUParams)
    SAM: SAMParams = field(default_factory=SAMParams)
    RepNoise: RepNoiseParams = field(default_factory=RepNoiseParams)
    teacher_rule: TeacherRuleParams = field(default_factory=TeacherRuleParams)
    # A run is marked collapsed when its retain performance above chance is below this fraction of
    # the full model's. A collapsed run counts as failed and is never a teacher.
    collapse_fraction: float = 0.25
    train: TrainParams = field(default_factory=TrainParams)  # shared by every run; LRs come from the sweeps


@dataclass(frozen=True)
class DistillParams:
    teacher: Literal["GradDiff", "MaxEnt", "RMU"] = "MaxEnt"  # selected teacher that UNDO distills (paper: MaxEnt)
    alphas: tuple[float, ...] = (0.3, 0.6, 0.9)  # UNDO mixing weights, one stage each
    beta: float = 0.1  # scale of the Xavier noise inside the alpha term
    # Arithmetic: stop once student retain accuracy >= teacher's - margin (absolute).
    # Language: stop once student English CE <= teacher's * (1 + margin) (relative).
    stop_margin: float = 0.05
    stop_consecutive: int = 1  # the stop rule must hold on this many checks in a row
    train: TrainParams = field(default_factory=TrainParams)  # steps is the cap


@dataclass(frozen=True)
class RelearnParams:
    lrs: tuple[float, ...] = (3e-4, 1e-3)  # attacker's LR grid; the worst case is taken per step
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class EvaluateParams:
    """Arithmetic evaluation: greedy generation on the prompt sets."""

    batch_size: int = 200  # prompts per generate() call
    max_new_tokens: int = 6  # greedy tokens generated per prompt


@dataclass(frozen=True)
class LanguageEvaluateParams:
    """Language evaluation: English and Korean validation cross-entropy."""

    batch_size: int = 64  # validation documents per forward pass
    documents: int = 200  # validation documents per language in each CE (the first ones of the split)


@dataclass(frozen=True)
class EvaluateSections(_SettingSections):
    """The ``evaluate`` section: one entry per setting, each with its own shape."""

    arithmetic: EvaluateParams | None = None
    language: LanguageEvaluateParams | None = None


@dataclass(frozen=True)
class FiguresParams:
    robustness_step: int = 50  # attack step at which robustness vs compute is read
    attack_budgets: tuple[int, ...] = (0, 10, 50)  # attack steps of the Pareto panels (paper: 0, 40, 500)


# ----------------------------------------------------------------------------------------------
# WMDP setting: a pretrained model (or a random stand-in), multiple-choice evaluation


WMDP_RUN_NAMES = ("MaxEnt", "RMU", "SAM", "RepNoise")  # WMDP unlearning runs (undo_lib.wmdp_losses)
WMDP_TEACHERS = ("MaxEnt", "RMU")  # runs UNDO may distill


@dataclass(frozen=True)
class WMDPModelParams:
    """The model to unlearn: a Gemma2 stand-in of shape ``stand_in``, pretrained by the base stage, or a pretrained model."""

    source: str = "config"  # "config": the stand-in; else a local folder or a hub id (paper: google/gemma-2-2b)
    revision: str | None = None  # hub branch, tag or commit of a hub id; null reads the default branch
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weight dtype (paper: bfloat16)
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "eager"  # paper: eager
    stand_in: ModelParams = field(default_factory=ModelParams)  # shape of the stand-in (source: config)
    stand_in_vocab_size: int = 512  # BPE vocabulary of the stand-in, trained on the WMDP corpora
    # The base stage pretrains the stand-in on the forget, retain and general training text, so that
    # it has something to unlearn. A pretrained source is used as it is.
    stand_in_pretrain: TrainParams = field(default_factory=lambda: TrainParams(steps=1, lr=1e-3))


@dataclass(frozen=True)
class CorpusParams:
    """One text corpus: a local jsonl file, or a dataset streamed from the hub."""

    kind: Literal["jsonl", "hub"] = "jsonl"
    path: str = ""  # the jsonl file, or the dataset's hub id
    text_field: str = "text"
    config: str | None = None  # hub only: dataset configuration, such as cyber-forget-corpus
    split: str = "train"  # hub only
    revision: str | None = None  # hub only: pin a commit to keep runs comparable
    max_chars: int | None = None  # keep documents until this many characters (null: all)


@dataclass(frozen=True)
class WMDPDataParams:
    forget: CorpusParams = field(default_factory=CorpusParams)  # paper: WMDP bio forget (on request) or cyber forget
    retain: CorpusParams = field(default_factory=CorpusParams)  # paper: WMDP bio or cyber retain corpus
    general: dict[str, CorpusParams] = field(default_factory=dict)  # general text by name (paper: wikitext, ...)
    unlearn_retain_mixture: dict[str, float] = field(default_factory=dict)  # paper: retain 0.5, wikitext 0.5
    distill_mixture: dict[str, float] = field(default_factory=dict)  # general sources (paper: ten sources, listed in docs/wmdp.md)
    relearn_mixture: dict[str, float] = field(default_factory=dict)  # paper: forget 0.5, retain 0.5
    mixture_unit: Literal["documents", "characters"] = "characters"  # paper: shares of tokens
    stopping_strategy: Literal["first_exhausted", "all_exhausted"] = "all_exhausted"  # paper: all_exhausted
    min_chars: int = 20  # shorter documents are dropped
    validation_documents: int = 50  # forget and retain documents held out for the forget and retain CE
    unlearn_seq_len: int = 256  # paper: 256
    distill_seq_len: int = 1024  # paper: 1024
    relearn_seq_len: int = 256  # paper: 256


@dataclass(frozen=True)
class MultipleChoiceTaskParams:
    """One multiple-choice benchmark, scored by log-likelihood of the answer letter."""

    harness_task: str = ""  # lm-evaluation-harness task name (wmdp_bio, wmdp_cyber, mmlu)
    questions: str | None = None  # builtin backend: jsonl of questions (question, choices, answer[, subject])
    fewshot_questions: str | None = None  # builtin backend: jsonl the few-shot examples come from (MMLU dev)
    num_fewshot: int = 0  # paper: 0 for WMDP, 5 for MMLU
    limit: int | None = None  # score only the first N questions (null: all)


@dataclass(frozen=True)
class WMDPEvaluateParams:
    backend: Literal["builtin", "harness"] = "builtin"  # harness: lm-evaluation-harness (pinned in requirements)
    harness_include_path: str | None = None  # folder of extra harness task YAMLs, such as local tasks
    forget: MultipleChoiceTaskParams = field(default_factory=MultipleChoiceTaskParams)  # paper: wmdp_bio
    retain: MultipleChoiceTaskParams = field(default_factory=MultipleChoiceTaskParams)  # paper: mmlu, 5-shot
    batch_size: int = 16  # (question, choice) rows per forward pass
    seed: int = 1234  # few-shot sampling seed (paper: 1234)


@dataclass(frozen=True)
class WMDPMaxEntParams:
    alpha: float = 0.3  # retain weight; forget weight 1 - alpha (paper: 0.3 or 0.1 bio, 0.2 cyber)
    use_retain_kl: bool = True  # retain term: KL to the frozen reference (paper), else CE
    lr: float = 2e-5  # paper: 2e-5


@dataclass(frozen=True)
class WMDPRMUParams:
    alpha: float = 0.5  # retain weight (paper: 0.5 bio; 0.5, 0.2, 0.1 cyber)
    layers: tuple[int, ...] = (10, 11, 12, 13, 14, 15)  # layers whose mlp.down_proj trains (paper: 10..15)
    hidden_layer: int = 15  # steered residual state hidden_states[i] (paper: 15)
    steering_coefficient: float = 80.0  # paper: 80
    control_vector: Literal["gaussian", "uniform"] = "gaussian"
    lr: float = 5e-5  # paper: 5e-5


@dataclass(frozen=True)
class WMDPSAMParams:
    """MaxEnt-WMDP (with MaxEnt's alpha and retain term) trained with SAM."""

    rho: float = 0.01  # paper: 0.01
    lr: float = 2e-5


@dataclass(frozen=True)
class WMDPRepNoiseParams:
    """MaxEnt-WMDP (with MaxEnt's alpha and retain term) plus the RepNoise loss."""

    alpha: float = 1.0  # weight of -log(1 + logit-lens CE on forget data) (paper: 1.0)
    beta: float = 1.0  # weight of the noise MMD (paper: 1.0)
    lr: float = 2e-5


@dataclass(frozen=True)
class WMDPUnlearnParams:
    runs: tuple[str, ...] = ("MaxEnt", "RMU")  # unlearning runs, one stage each
    MaxEnt: WMDPMaxEntParams = field(default_factory=WMDPMaxEntParams)
    RMU: WMDPRMUParams = field(default_factory=WMDPRMUParams)
    SAM: WMDPSAMParams = field(default_factory=WMDPSAMParams)
    RepNoise: WMDPRepNoiseParams = field(default_factory=WMDPRepNoiseParams)
    train: TrainParams = field(default_factory=TrainParams)  # lr comes from the run's section


@dataclass(frozen=True)
class WMDPUndoParams:
    teachers: tuple[str, ...] = ("MaxEnt", "RMU")  # unlearned runs UNDO distills
    alphas: tuple[float, ...] = (0.25,)  # paper: 0.25
    beta: float = 0.0  # paper: 0 (shrink only)
    train: TrainParams = field(default_factory=TrainParams)  # a fixed number of steps (paper: no stop rule)


@dataclass(frozen=True)
class WMDPParams:
    model: WMDPModelParams = field(default_factory=WMDPModelParams)
    data: WMDPDataParams = field(default_factory=WMDPDataParams)
    evaluate: WMDPEvaluateParams = field(default_factory=WMDPEvaluateParams)
    unlearn: WMDPUnlearnParams = field(default_factory=WMDPUnlearnParams)
    undo: WMDPUndoParams = field(default_factory=WMDPUndoParams)
    relearn: RelearnParams = field(default_factory=RelearnParams)


@dataclass(frozen=True)
class Params:
    shared: SharedParams
    data: DataSections
    tokenizer: dict[str, TokenizerParams]
    model: dict[str, ModelParams]
    pretrain: dict[str, TrainParams]
    unlearn: dict[str, UnlearnParams]
    distill: dict[str, DistillParams]
    relearn: dict[str, RelearnParams]
    evaluate: EvaluateSections
    figures: dict[str, FiguresParams]
    wmdp: WMDPParams | None = None  # the WMDP setting; its stages need it


# ----------------------------------------------------------------------------------------------
# Generic strict conversion


def _suggest(key: str, allowed: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _convert(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, path)
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{path}: invalid value {value!r}; allowed values are {list(args)}.")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ParamsError(f"{path}: expected a list, got {value!r}. Write it as [a, b, ...].")
        return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{path}: expected a mapping, got {value!r}.")
        return {k: _convert(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    return _convert_scalar(value, hint, path)


def _convert_scalar(value: Any, hint: type, path: str) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # PyYAML reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    if hint is str and isinstance(value, (int, float)):
        raise ParamsError(f"{path}: expected a string, got the number {value!r}. Quote it in params.yaml "
                          f"(\"{value}\"), because YAML reads unquoted versions such as 11.10 as numbers.")
    raise ParamsError(
        f"{path}: expected {hint.__name__}, got {type(value).__name__} {value!r}. "
        f"Fix the value in params.yaml."
    )


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping, got {data!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ParamsError(
                f"{f'{path}.{key}' if path else key}: unknown key.{_suggest(key, names)} "
                f"Allowed keys: {', '.join(names)}."
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        key_path = f"{path}.{f.name}" if path else f.name
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{key_path}: missing. Add it to params.yaml.")
    return cls(**kwargs)


# ----------------------------------------------------------------------------------------------
# Range checks


def _check(condition: bool, path: str, value: Any, requirement: str) -> None:
    if not condition:
        raise ParamsError(f"{path}: invalid value {value!r}; it must be {requirement}.")


def _check_train(t: TrainParams, path: str, needs_lr: bool) -> None:
    _check(t.steps > 0, f"{path}.steps", t.steps, "a positive integer")
    _check(t.batch_size > 0, f"{path}.batch_size", t.batch_size, "a positive integer")
    _check(t.grad_accum > 0, f"{path}.grad_accum", t.grad_accum, "a positive integer")
    _check(t.warmup_steps >= 0, f"{path}.warmup_steps", t.warmup_steps, ">= 0")
    _check(0 <= t.weight_decay < math.inf, f"{path}.weight_decay", t.weight_decay, "a finite number >= 0")
    _check(0 <= t.max_grad_norm < math.inf, f"{path}.max_grad_norm", t.max_grad_norm,
           "a finite number >= 0 (0 disables clipping)")
    _check(t.eval_every >= 0, f"{path}.eval_every", t.eval_every, ">= 0 (0: start and end only)")
    _check(t.checkpoint_every >= 0, f"{path}.checkpoint_every", t.checkpoint_every, ">= 0 (0 disables checkpoints)")
    _check(list(t.eval_steps) == sorted(set(t.eval_steps)) and all(s > 0 for s in t.eval_steps),
           f"{path}.eval_steps", list(t.eval_steps), "an increasing list of positive step numbers")
    _check(t.sam_rho == 0, f"{path}.sam_rho", t.sam_rho,
           "0: SAM is the unlearning baseline configured under unlearn.<setting>.SAM (method, rho, lrs)")
    if needs_lr:
        _check(t.lr is not None and 0 < t.lr < math.inf, f"{path}.lr", t.lr, "a positive finite number")
        if t.min_lr is not None:
            _check(0 <= t.min_lr <= t.lr, f"{path}.min_lr", t.min_lr, f"in [0, lr={t.lr}]")
    else:
        _check(t.lr is None, f"{path}.lr", t.lr, "absent: this stage takes its LRs from the grid 'lrs'")


def _check_model(m: ModelParams, path: str) -> None:
    # head_dim need not equal hidden_size / num_attention_heads, because the attention output
    # projection maps heads * head_dim back to hidden_size. Gemma-2-2B has 8 heads of 256 and hidden size 2304.
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "intermediate_size", "sliding_window", "max_position_embeddings",
                 "query_pre_attn_scalar"):
        _check(getattr(m, name) > 0, f"{path}.{name}", getattr(m, name), "a positive integer")
    _check(m.num_attention_heads % m.num_key_value_heads == 0, f"{path}.num_key_value_heads",
           m.num_key_value_heads, f"a divisor of num_attention_heads={m.num_attention_heads}")


def _check_unit(values: typing.Iterable[float], path: str) -> None:
    for i, v in enumerate(values):
        _check(0.0 <= v <= 1.0, f"{path}[{i}]", v, "in [0, 1]")


def _check_float_literals(data: Any, path: str) -> None:
    """Reject integers in the lists whose values name DVC stages and folders (LRs, alphas).

    DVC writes ``[1, 0.5]`` into folder names as ``1`` and ``0.5``, but Python formats the parsed
    floats as ``1.0`` and ``0.5``. A stage would then write a folder that the next stage cannot find.
    """
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("lrs", "alphas") and isinstance(value, list):
                for i, v in enumerate(value):
                    if isinstance(v, int) and not isinstance(v, bool):
                        raise ParamsError(f"{path}{key}[{i}]: invalid value {v!r}; write it as a float "
                                          f"({float(v)!r}), because stage and folder names use the value as written.")
            elif isinstance(value, dict):
                _check_float_literals(value, f"{path}{key}.")


def _validate_arithmetic_data(d: ArithmeticDataParams, path: str) -> None:
    _check(0 <= d.word_problem_fraction <= 1, f"{path}.word_problem_fraction", d.word_problem_fraction, "in [0, 1]")
    _check(0 <= d.english_fraction < 1, f"{path}.english_fraction", d.english_fraction, "in [0, 1)")
    _check(0 < d.english_validation_fraction < 1, f"{path}.english_validation_fraction",
           d.english_validation_fraction, "in (0, 1)")
    for name in ("seq_len", "pretrain_documents", "distill_documents", "unlearn_documents",
                 "relearn_documents", "eval_prompts", "english_max_chars"):
        _check(getattr(d, name) > 0, f"{path}.{name}", getattr(d, name), "a positive integer")


def _validate_language_data(d: LanguageDataParams, path: str) -> None:
    # Imported here because undo_lib.language imports torch through undo_lib.io, and this module does not.
    from undo_lib.language import MIN_LINE_CHARS, PACKAGE_LAYOUTS

    for name in ("seq_len", "pretrain_documents", "distill_documents", "unlearn_documents",
                 "relearn_documents"):
        _check(getattr(d, name) > 0, f"{path}.{name}", getattr(d, name), "a positive integer")
    _check(d.max_document_chars >= MIN_LINE_CHARS, f"{path}.max_document_chars", d.max_document_chars,
           f">= {MIN_LINE_CHARS}, because lines shorter than {MIN_LINE_CHARS} characters are dropped as "
           "headings and labels, and a smaller limit would cut every kept line into fragments")
    _check(0 < d.validation_fraction < 1, f"{path}.validation_fraction", d.validation_fraction, "in (0, 1)")
    _check(0 < d.korean_fraction < 1, f"{path}.korean_fraction", d.korean_fraction, "in (0, 1)")
    _check(0 < d.min_hangul_share <= 1, f"{path}.min_hangul_share", d.min_hangul_share,
           "in (0, 1], because at 0 every line, even one without Hangul, would count as Korean")
    if d.source == "local":
        for language in ("english", "korean"):
            files = getattr(d.local, language)
            _check(len(files) > 0, f"{path}.local.{language}", list(files),
                   "a non-empty list of .jsonl or .txt files when source is 'local'")
            for file in files:
                _check(Path(file).suffix in (".jsonl", ".txt"), f"{path}.local.{language}", file,
                       "a .jsonl or .txt file")
    if d.source == "hub":
        for language in ("english", "korean"):
            hub = getattr(d.hub, language)
            _check(bool(hub.path), f"{path}.hub.{language}.path", hub.path, "a dataset id or local folder")
            _check(hub.max_chars > 0, f"{path}.hub.{language}.max_chars", hub.max_chars, "a positive integer")
    if d.source == "offline":
        packages = d.offline.packages
        _check(len(packages) > 0, f"{path}.offline.packages", packages,
               "a non-empty mapping of Debian package name to version")
        languages = {name: layout.language for name, layout in PACKAGE_LAYOUTS.items()}
        for name in packages:
            _check(name in languages, f"{path}.offline.packages", name,
                   f"one of the packages whose pages undo_lib.language can read (name: language): "
                   f"{languages}. For other text, set {path}.source: local")
        english = sorted(name for name, language in languages.items() if language == "english")
        korean = sorted(name for name, language in languages.items() if language == "korean")
        _check(any(languages[name] == "korean" for name in packages), f"{path}.offline.packages", list(packages),
               f"a mapping with at least one Korean package, one of {korean}, because Korean is the forget text")
        _check(d.offline.include_python_docs or any(languages[name] == "english" for name in packages),
               f"{path}.offline.packages", list(packages),
               f"a mapping with at least one English package, one of {english}, or {path}.offline."
               "include_python_docs set to true, because English is the retain text")


def _validate_evaluate(p: Params, s: str) -> None:
    e = p.evaluate[s]
    _check(e.batch_size > 0, f"evaluate.{s}.batch_size", e.batch_size, "a positive integer")
    if s == "arithmetic":
        _check(e.max_new_tokens > 0, f"evaluate.{s}.max_new_tokens", e.max_new_tokens, "a positive integer")
    else:
        _check(e.documents > 0, f"evaluate.{s}.documents", e.documents, "a positive integer")


def _validate_data(p: Params, s: str) -> None:
    if s == "arithmetic":
        _validate_arithmetic_data(p.data[s], f"data.{s}")
    else:
        _validate_language_data(p.data[s], f"data.{s}")
    _check(p.data[s].seq_len <= p.model[s].max_position_embeddings, f"data.{s}.seq_len", p.data[s].seq_len,
           f"<= model.{s}.max_position_embeddings={p.model[s].max_position_embeddings}")
    _check(p.tokenizer[s].training_documents > 0, f"tokenizer.{s}.training_documents",
           p.tokenizer[s].training_documents, "a positive integer")
    _check(p.tokenizer[s].vocab_size >= 300, f"tokenizer.{s}.vocab_size", p.tokenizer[s].vocab_size,
           ">= 300 (256 byte symbols plus special tokens and merges)")


def _validate_distill(d: DistillParams, path: str) -> None:
    _check_train(d.train, f"{path}.train", needs_lr=True)
    _check_unit(d.alphas, f"{path}.alphas")
    _check(len(set(d.alphas)) == len(d.alphas), f"{path}.alphas", list(d.alphas), "a list without duplicates")
    _check(0.0 <= d.beta <= 1.0, f"{path}.beta", d.beta, "in [0, 1]")
    _check(len(d.alphas) > 0, f"{path}.alphas", list(d.alphas), "a non-empty list")
    _check(0 <= d.stop_margin < 1, f"{path}.stop_margin", d.stop_margin,
           "in [0, 1): the student stops once its retain metric is within this margin of the teacher's")
    _check(d.stop_consecutive >= 1, f"{path}.stop_consecutive", d.stop_consecutive, ">= 1")
    _check(d.train.eval_every > 0, f"{path}.train.eval_every", d.train.eval_every,
           "a positive integer: the stop rule is checked every eval_every steps")


def _check_lrs(lrs: tuple[float, ...], path: str) -> None:
    _check(len(lrs) > 0, path, list(lrs), "a non-empty list of learning rates")
    _check(all(0 < lr < math.inf for lr in lrs), path, list(lrs), "a list of positive finite numbers")
    _check(len(set(lrs)) == len(lrs), path, list(lrs), "a list without duplicates")


def _validate_rmu(r: RMUParams, m: ModelParams, path: str) -> None:
    layers = m.num_hidden_layers
    _check(len(r.layers) > 0, f"{path}.layers", list(r.layers), "a non-empty list of layer indices")
    for i, layer in enumerate(r.layers):
        _check(0 <= layer < layers, f"{path}.layers[{i}]", layer, f"a layer index in [0, {layers - 1}]")
    _check(1 <= r.hidden_layer <= layers, f"{path}.hidden_layer", r.hidden_layer,
           f"an index into hidden_states in [1, {layers}] (model.num_hidden_layers={layers})")
    _check(min(r.layers) < r.hidden_layer, f"{path}.layers", list(r.layers),
           f"a list with a layer below hidden_layer={r.hidden_layer}, or the steered state cannot change")
    _check(0 < r.steering_coefficient < math.inf, f"{path}.steering_coefficient", r.steering_coefficient,
           "a positive finite number")
    _check(r.retain_weight >= 0, f"{path}.retain_weight", r.retain_weight, ">= 0")


def _validate_teacher_rule(u: UnlearnParams, path: str) -> None:
    t = u.teacher_rule
    _check(0 <= t.min_retain_fraction <= 1, f"{path}.min_retain_fraction", t.min_retain_fraction, "in [0, 1]")
    if t.rule != "fixed_lr":
        return
    for method in METHOD_NAMES:
        sweep = getattr(u, method).lrs
        _check(method in t.lrs, f"{path}.lrs", t.lrs, f"a mapping with an LR for {method} when rule is fixed_lr")
        _check(t.lrs[method] in sweep, f"{path}.lrs.{method}", t.lrs[method],
               f"one of the LRs of its sweep, {list(sweep)}")
    for name in t.lrs:
        _check(name in METHOD_NAMES, f"{path}.lrs", name, f"one of {list(METHOD_NAMES)}")


def _validate_unlearn(u: UnlearnParams, m: ModelParams, path: str) -> None:
    _check_train(u.train, f"{path}.train", needs_lr=False)
    for run in RUN_NAMES:
        _check_lrs(getattr(u, run).lrs, f"{path}.{run}.lrs")
    for name in ("GradDiff", "MaxEnt"):
        weight = getattr(u, name).retain_weight
        _check(weight >= 0, f"{path}.{name}.retain_weight", weight, ">= 0")
    _check(u.MaxEnt.repnoise_alpha >= 0, f"{path}.MaxEnt.repnoise_alpha", u.MaxEnt.repnoise_alpha, ">= 0")
    _check(u.MaxEnt.repnoise_beta >= 0, f"{path}.MaxEnt.repnoise_beta", u.MaxEnt.repnoise_beta, ">= 0")
    _validate_rmu(u.RMU, m, f"{path}.RMU")
    _check(0 < u.SAM.rho < math.inf, f"{path}.SAM.rho", u.SAM.rho, "a positive finite number")
    _check(u.RepNoise.alpha >= 0, f"{path}.RepNoise.alpha", u.RepNoise.alpha, ">= 0")
    _check(u.RepNoise.beta >= 0, f"{path}.RepNoise.beta", u.RepNoise.beta, ">= 0")
    _check(u.RepNoise.alpha + u.RepNoise.beta > 0, f"{path}.RepNoise", to_dict(u.RepNoise),
           "a section with alpha > 0 or beta > 0, or RepNoise adds nothing to MaxEnt")
    _check(0 <= u.collapse_fraction < 1, f"{path}.collapse_fraction", u.collapse_fraction, "in [0, 1)")
    _validate_teacher_rule(u, f"{path}.teacher_rule")


def _validate_relearn(r: RelearnParams, path: str) -> None:
    _check_train(r.train, f"{path}.train", needs_lr=False)
    _check_lrs(r.lrs, f"{path}.lrs")
    _check(r.train.eval_every > 0, f"{path}.train.eval_every", r.train.eval_every, "a positive integer")


def _validate_figures(f: FiguresParams, attack: TrainParams, s: str) -> None:
    evaluated = f"an evaluated attack step: a multiple of relearn.{s}.train.eval_every={attack.eval_every} " \
                f"in [0, relearn.{s}.train.steps={attack.steps}]"
    for path, step in [(f"figures.{s}.robustness_step", f.robustness_step),
                       *((f"figures.{s}.attack_budgets[{i}]", b) for i, b in enumerate(f.attack_budgets))]:
        _check(0 <= step <= attack.steps and (step % attack.eval_every == 0 or step == attack.steps),
               path, step, evaluated)
    _check(len(f.attack_budgets) > 0, f"figures.{s}.attack_budgets", list(f.attack_budgets), "a non-empty list")


def _validate_mixture(probabilities: dict[str, float], names: typing.Iterable[str], path: str) -> None:
    names = list(names)
    _check(len(probabilities) > 0, path, probabilities, f"a mapping of corpus names ({', '.join(names)}) to shares")
    for name, share in probabilities.items():
        _check(name in names, f"{path}.{name}", name, f"one of the corpora {names}")
        _check(0 < share <= 1, f"{path}.{name}", share, "in (0, 1]")
    _check(abs(sum(probabilities.values()) - 1) < 1e-6, path, probabilities, "shares that sum to 1")


def _check_under_data(file: str, path: str) -> None:
    """Require a local input file under data/, the folder the WMDP stages depend on in dvc.yaml."""
    parts = Path(file).parts
    _check(not Path(file).is_absolute() and len(parts) > 1 and parts[0] == "data" and ".." not in parts, path, file,
           "a path under data/ relative to the repository root, because DVC reruns the WMDP stages when a "
           "file under data/ changes and would miss changes elsewhere. Move or link the file into data/")


def _validate_corpus(c: CorpusParams, path: str) -> None:
    _check(c.path.strip() != "", f"{path}.path", c.path, "a jsonl file or a hub dataset id")
    if c.kind == "jsonl":
        _check(c.config is None and c.revision is None and c.split == "train", path, to_dict(c),
               "a jsonl source without config, split or revision (they apply to kind: hub)")
        _check_under_data(c.path, f"{path}.path")
    _check(c.max_chars is None or c.max_chars > 0, f"{path}.max_chars", c.max_chars, "null or a positive integer")


def _validate_wmdp_data(d: WMDPDataParams, path: str) -> None:
    _validate_corpus(d.forget, f"{path}.forget")
    _validate_corpus(d.retain, f"{path}.retain")
    for name, corpus in d.general.items():
        _check(name not in ("forget", "retain"), f"{path}.general.{name}", name, "a name other than forget and retain")
        _validate_corpus(corpus, f"{path}.general.{name}")
    _validate_mixture(d.unlearn_retain_mixture, ["retain", *d.general], f"{path}.unlearn_retain_mixture")
    _validate_mixture(d.distill_mixture, ["forget", "retain", *d.general], f"{path}.distill_mixture")
    _validate_mixture(d.relearn_mixture, ["forget", "retain", *d.general], f"{path}.relearn_mixture")
    _check(d.min_chars >= 1, f"{path}.min_chars", d.min_chars, "a positive integer")
    _check(d.validation_documents >= 1, f"{path}.validation_documents", d.validation_documents, "a positive integer")
    for key in ("unlearn_seq_len", "distill_seq_len", "relearn_seq_len"):
        _check(getattr(d, key) >= 2, f"{path}.{key}", getattr(d, key), "an integer >= 2")


def _validate_task(t: MultipleChoiceTaskParams, backend: str, path: str) -> None:
    _check(t.num_fewshot >= 0, f"{path}.num_fewshot", t.num_fewshot, ">= 0")
    _check(t.limit is None or t.limit > 0, f"{path}.limit", t.limit, "null or a positive integer")
    if backend == "harness":
        _check(t.harness_task != "", f"{path}.harness_task", t.harness_task,
               "an lm-evaluation-harness task name (backend: harness), such as wmdp_bio or mmlu")
        return
    _check(bool(t.questions), f"{path}.questions", t.questions,
           "a jsonl file of questions (backend: builtin); or set backend: harness")
    _check_under_data(t.questions, f"{path}.questions")
    _check(t.num_fewshot == 0 or bool(t.fewshot_questions), f"{path}.fewshot_questions", t.fewshot_questions,
           f"a jsonl file of few-shot examples, because num_fewshot={t.num_fewshot}")
    if t.fewshot_questions:
        _check_under_data(t.fewshot_questions, f"{path}.fewshot_questions")


def _validate_wmdp_unlearn(u: WMDPUnlearnParams, m: WMDPModelParams, path: str) -> None:
    _check(len(u.runs) > 0 and len(set(u.runs)) == len(u.runs), f"{path}.runs", list(u.runs),
           f"a non-empty list without duplicates, from {list(WMDP_RUN_NAMES)}")
    for i, run in enumerate(u.runs):
        _check(run in WMDP_RUN_NAMES, f"{path}.runs[{i}]", run, f"one of {list(WMDP_RUN_NAMES)}")
    _check_train(u.train, f"{path}.train", needs_lr=False)
    for name in WMDP_RUN_NAMES:
        lr = getattr(u, name).lr
        _check(0 < lr < math.inf, f"{path}.{name}.lr", lr, "a positive finite number")
    for name, alpha in (("MaxEnt", u.MaxEnt.alpha), ("RMU", u.RMU.alpha)):
        _check(0 < alpha < 1, f"{path}.{name}.alpha", alpha,
               "strictly between 0 and 1: the loss weights forget by 1 - alpha and retain by alpha")
    _check(u.SAM.rho > 0, f"{path}.SAM.rho", u.SAM.rho, "a positive number (paper: 0.01)")
    _check(u.RepNoise.alpha >= 0 and u.RepNoise.beta >= 0, f"{path}.RepNoise", to_dict(u.RepNoise),
           "non-negative alpha and beta")
    if m.source == "config":
        layers = m.stand_in.num_hidden_layers
        _check(0 < u.RMU.hidden_layer < layers, f"{path}.RMU.hidden_layer", u.RMU.hidden_layer,
               f"in [1, {layers - 1}] for the stand-in's {layers} layers")
        _check(all(0 <= i < u.RMU.hidden_layer for i in u.RMU.layers), f"{path}.RMU.layers", list(u.RMU.layers),
               f"layer indices below hidden_layer={u.RMU.hidden_layer}")


def _validate_wmdp_model(m: WMDPModelParams) -> None:
    _check(m.source.strip() != "", "wmdp.model.source", m.source,
           "'config' (the random stand-in), a local folder or a hub id such as google/gemma-2-2b")
    _check(Path(m.source).parts[:1] != ("outputs",), "wmdp.model.source", m.source,
           "a folder outside outputs/, because DVC deletes a stage's outputs before it reruns the stage. "
           "Copy the folder elsewhere (for example to models/) and point source at the copy")
    _check(m.stand_in_vocab_size >= 64, "wmdp.model.stand_in_vocab_size", m.stand_in_vocab_size, ">= 64")
    _check_model(m.stand_in, "wmdp.model.stand_in")
    _check_train(m.stand_in_pretrain, "wmdp.model.stand_in_pretrain", needs_lr=True)


def _validate_wmdp(w: WMDPParams) -> None:
    _validate_wmdp_model(w.model)
    _validate_wmdp_data(w.data, "wmdp.data")
    _validate_task(w.evaluate.forget, w.evaluate.backend, "wmdp.evaluate.forget")
    _validate_task(w.evaluate.retain, w.evaluate.backend, "wmdp.evaluate.retain")
    _check(w.evaluate.batch_size > 0, "wmdp.evaluate.batch_size", w.evaluate.batch_size, "a positive integer")
    if w.evaluate.harness_include_path:
        _check_under_data(w.evaluate.harness_include_path, "wmdp.evaluate.harness_include_path")
    _validate_wmdp_unlearn(w.unlearn, w.model, "wmdp.unlearn")
    for i, teacher in enumerate(w.undo.teachers):
        _check(teacher in WMDP_TEACHERS and teacher in w.unlearn.runs, f"wmdp.undo.teachers[{i}]", teacher,
               f"one of {list(WMDP_TEACHERS)} that is also in wmdp.unlearn.runs {list(w.unlearn.runs)}")
    _check(len(w.undo.alphas) > 0, "wmdp.undo.alphas", list(w.undo.alphas), "a non-empty list")
    _check_unit(w.undo.alphas, "wmdp.undo.alphas")
    _check(0 <= w.undo.beta <= 1, "wmdp.undo.beta", w.undo.beta, "in [0, 1] (paper: 0)")
    _check_train(w.undo.train, "wmdp.undo.train", needs_lr=True)
    _check_train(w.relearn.train, "wmdp.relearn.train", needs_lr=False)
    _check_lrs(w.relearn.lrs, "wmdp.relearn.lrs")
    steps = w.relearn.train.steps
    _check(all(0 < s <= steps for s in w.relearn.train.eval_steps), "wmdp.relearn.train.eval_steps",
           list(w.relearn.train.eval_steps), f"steps in [1, wmdp.relearn.train.steps={steps}]")


def _validate_setting(p: Params, s: str) -> None:
    _validate_data(p, s)
    _check_model(p.model[s], f"model.{s}")
    _check_train(p.pretrain[s], f"pretrain.{s}", needs_lr=True)
    _validate_unlearn(p.unlearn[s], p.model[s], f"unlearn.{s}")
    _validate_distill(p.distill[s], f"distill.{s}")
    _validate_relearn(p.relearn[s], f"relearn.{s}")
    _validate_evaluate(p, s)
    _validate_figures(p.figures[s], p.relearn[s].train, s)
    _validate_processes(p, _training_sections(p, s))


def _training_sections(p: Params, s: str) -> dict[str, TrainParams]:
    return {f"pretrain.{s}": p.pretrain[s], f"unlearn.{s}.train": p.unlearn[s].train,
            f"distill.{s}.train": p.distill[s].train, f"relearn.{s}.train": p.relearn[s].train}


def _wmdp_training_sections(w: WMDPParams) -> dict[str, TrainParams]:
    return {"wmdp.unlearn.train": w.unlearn.train, "wmdp.undo.train": w.undo.train,
            "wmdp.relearn.train": w.relearn.train}


def _validate_processes(p: Params, sections: dict[str, TrainParams]) -> None:
    """Reject training sections that cannot run in shared.num_processes data-parallel processes."""
    processes = p.shared.num_processes
    if processes == 1:
        return
    for path, train in sections.items():
        _check(train.checkpoint_every == 0, f"{path}.checkpoint_every", train.checkpoint_every,
               f"0 while shared.num_processes={processes}, because every process would write and resume "
               "the same checkpoint folder. Set it to 0, or set shared.num_processes: 1")
        _check(train.batch_size % processes == 0, f"{path}.batch_size", train.batch_size,
               f"a multiple of shared.num_processes={processes}, because each process trains on "
               f"batch_size / {processes} rows of every micro-batch")


def validate(p: Params) -> Params:
    """Check cross-field rules and value ranges; return ``p`` unchanged or raise ParamsError."""
    _check(len(p.shared.settings) > 0, "shared.settings", list(p.shared.settings), f"a non-empty subset of {list(SETTINGS)}")
    _check(p.shared.torch_threads >= 0, "shared.torch_threads", p.shared.torch_threads, ">= 0")
    _check(len(p.shared.seeds) > 0, "shared.seeds", list(p.shared.seeds), "a non-empty list of integers")
    _check(len(set(p.shared.seeds)) == len(p.shared.seeds), "shared.seeds", list(p.shared.seeds),
           "a list without duplicates")
    _check(all(seed >= 0 for seed in p.shared.seeds), "shared.seeds", list(p.shared.seeds), "a list of integers >= 0")
    _check(p.shared.num_processes >= 1, "shared.num_processes", p.shared.num_processes,
           ">= 1 (1 trains in the notebook's process)")
    for s in p.shared.settings:
        _check(s in SETTINGS, "shared.settings", s, f"one of {list(SETTINGS)}")
        for section in ("data", "tokenizer", "model", "pretrain", "unlearn", "distill", "relearn",
                        "evaluate", "figures"):
            if s not in getattr(p, section):
                raise ParamsError(f"{section}.{s}: missing. Setting '{s}' is listed in shared.settings, "
                                  f"so params.yaml needs a '{section}: {{{s}: ...}}' section.")
        _validate_setting(p, s)
    if p.wmdp is not None:
        _validate_wmdp(p.wmdp)
        _validate_processes(p, _wmdp_training_sections(p.wmdp))
    return p


def unknown_setting_problems(data: dict) -> list[str]:
    """Return one message per entry of a per-setting section of parsed params ``data`` that names no setting."""
    problems = []
    for section in PER_SETTING_SECTIONS:
        entries = data.get(section)
        if not isinstance(entries, dict):
            continue
        for name in entries:
            if name not in SETTINGS:
                problems.append(f"{section}.{name}: unknown setting.{_suggest(name, SETTINGS)} "
                                f"Settings: {list(SETTINGS)}.")
    return problems


def params_from_dict(data: dict) -> Params:
    """Build and validate Params from a parsed params.yaml mapping."""
    if not isinstance(data, dict):
        raise ParamsError(f"params must be a mapping of sections, got {type(data).__name__}.")
    problems = unknown_setting_problems(data)
    if problems:
        raise ParamsError(" ".join(problems))
    _check_float_literals(data, "")
    return validate(_build(Params, data, ""))


def _yaml_error_message(path: Path, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    return (f"{path}{where}: invalid YAML: {problem}. Fix the syntax there: check the indentation, the colon "
            "after each key, and that every bracket and quote is closed.")


def read_params_file(path: str | Path) -> dict:
    """Parse the YAML file ``path`` into its mapping of sections, or raise ParamsError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}. Run from the repository root or pass its path.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(_yaml_error_message(path, err)) from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}.")
    return data


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, type-check and validate ``path``; raise ParamsError naming the file or key on any problem."""
    return params_from_dict(read_params_file(path))


def to_dict(section: Any) -> Any:
    """Turn a (nested) params dataclass back into plain YAML-friendly values."""
    if dataclasses.is_dataclass(section):
        return {f.name: to_dict(getattr(section, f.name)) for f in dataclasses.fields(section)}
    if isinstance(section, dict):
        return {k: to_dict(v) for k, v in section.items()}
    if isinstance(section, tuple):
        return [to_dict(v) for v in section]
    return section


def main() -> None:
    """Validate a params file from the command line: ``python -m undo_lib.config params.yaml``."""
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else "params.yaml"
    try:
        load_params(path)
    except ParamsError as err:
        sys.exit(f"invalid params: {err}")
    print(f"{path}: OK")


if __name__ == "__main__":
    main()
