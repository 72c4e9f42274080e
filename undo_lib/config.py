"""Typed, strict configuration read from ``params.yaml``.

Every knob that changes a result lives in ``params.yaml``. This module turns the file into frozen
dataclasses and rejects, before any compute is spent, unknown keys, missing keys, wrong types and
impossible values. Each error names the dotted key, the offending value and the fix.

Layout of ``params.yaml``: a ``shared`` section, then one section per kind of stage (``data``,
``tokenizer``, ``model``, ``pretrain``, ``unlearn``, ``distill``, ``relearn``, ``evaluate``,
``figures``), each keyed by setting name (``arithmetic``).
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

SETTINGS = ("arithmetic",)


class ParamsError(ValueError):
    """A value in params.yaml is unknown, missing, mistyped or out of range."""


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class SharedParams:
    seed: int = 0  # base seed; every stage derives its RNG seeds from it
    settings: tuple[str, ...] = ("arithmetic",)  # settings the pipeline runs
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when available
    torch_threads: int = 0  # intra-op CPU threads; 0 keeps torch's default
    check_memory: bool = True  # stop a training stage early when its estimated peak memory exceeds what is free


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


@dataclass(frozen=True)
class MaxEntParams:
    retain_weight: float = 1.0  # weight of the retain CE next to KL(uniform || p) on forget data


@dataclass(frozen=True)
class UnlearnParams:
    method: Literal["MaxEnt"] = "MaxEnt"  # the method whose model becomes the teacher
    MaxEnt: MaxEntParams = field(default_factory=MaxEntParams)
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class DistillParams:
    alphas: tuple[float, ...] = (0.3, 0.6, 0.9)  # UNDO mixing weights, one stage each
    beta: float = 0.1  # scale of the Xavier noise inside the alpha term
    stop_margin: float = 0.05  # stop once student retain >= teacher retain - margin
    stop_consecutive: int = 1  # the stop rule must hold on this many checks in a row
    train: TrainParams = field(default_factory=TrainParams)  # steps is the cap


@dataclass(frozen=True)
class RelearnParams:
    lrs: tuple[float, ...] = (3e-4, 1e-3)  # attacker's LR grid; the worst case is taken per step
    train: TrainParams = field(default_factory=TrainParams)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 200  # prompts per generate() call
    max_new_tokens: int = 6  # greedy tokens generated per prompt


@dataclass(frozen=True)
class FiguresParams:
    robustness_step: int = 50  # attack step at which robustness vs compute is read


@dataclass(frozen=True)
class Params:
    shared: SharedParams
    data: dict[str, ArithmeticDataParams]
    tokenizer: dict[str, TokenizerParams]
    model: dict[str, ModelParams]
    pretrain: dict[str, TrainParams]
    unlearn: dict[str, UnlearnParams]
    distill: dict[str, DistillParams]
    relearn: dict[str, RelearnParams]
    evaluate: dict[str, EvaluateParams]
    figures: dict[str, FiguresParams]


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
            raise ParamsError(f"{path}: expected a mapping of setting name to section, got {value!r}.")
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
    if needs_lr:
        _check(t.lr is not None and 0 < t.lr < math.inf, f"{path}.lr", t.lr, "a positive finite number")
        if t.min_lr is not None:
            _check(0 <= t.min_lr <= t.lr, f"{path}.min_lr", t.min_lr, f"in [0, lr={t.lr}]")
    else:
        _check(t.lr is None, f"{path}.lr", t.lr, "absent: this stage takes its LRs from the grid 'lrs'")


def _check_model(m: ModelParams, path: str) -> None:
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "intermediate_size", "sliding_window", "max_position_embeddings"):
        _check(getattr(m, name) > 0, f"{path}.{name}", getattr(m, name), "a positive integer")
    _check(m.num_attention_heads % m.num_key_value_heads == 0, f"{path}.num_key_value_heads",
           m.num_key_value_heads, f"a divisor of num_attention_heads={m.num_attention_heads}")
    _check(m.num_attention_heads * m.head_dim == m.hidden_size, f"{path}.head_dim", m.head_dim,
           f"hidden_size / num_attention_heads = {m.hidden_size}/{m.num_attention_heads}")


def _check_unit(values: typing.Iterable[float], path: str) -> None:
    for i, v in enumerate(values):
        _check(0.0 <= v <= 1.0, f"{path}[{i}]", v, "in [0, 1]")


def _validate_setting(p: Params, s: str) -> None:
    d = p.data[s]
    _check(0 <= d.word_problem_fraction <= 1, f"data.{s}.word_problem_fraction", d.word_problem_fraction, "in [0, 1]")
    _check(0 <= d.english_fraction < 1, f"data.{s}.english_fraction", d.english_fraction, "in [0, 1)")
    _check(0 < d.english_validation_fraction < 1, f"data.{s}.english_validation_fraction",
           d.english_validation_fraction, "in (0, 1)")
    for name in ("seq_len", "pretrain_documents", "distill_documents", "unlearn_documents",
                 "relearn_documents", "eval_prompts", "english_max_chars"):
        _check(getattr(d, name) > 0, f"data.{s}.{name}", getattr(d, name), "a positive integer")
    _check(d.seq_len <= p.model[s].max_position_embeddings, f"data.{s}.seq_len", d.seq_len,
           f"<= model.{s}.max_position_embeddings={p.model[s].max_position_embeddings}")
    _check(p.tokenizer[s].training_documents > 0, f"tokenizer.{s}.training_documents",
           p.tokenizer[s].training_documents, "a positive integer")
    _check(p.tokenizer[s].vocab_size >= 300, f"tokenizer.{s}.vocab_size", p.tokenizer[s].vocab_size,
           ">= 300 (256 byte symbols plus special tokens and merges)")
    _check_model(p.model[s], f"model.{s}")
    _check_train(p.pretrain[s], f"pretrain.{s}", needs_lr=True)
    _check_train(p.unlearn[s].train, f"unlearn.{s}.train", needs_lr=True)
    _check_train(p.distill[s].train, f"distill.{s}.train", needs_lr=True)
    _check_train(p.relearn[s].train, f"relearn.{s}.train", needs_lr=False)
    _check_unit(p.distill[s].alphas, f"distill.{s}.alphas")
    _check(len(set(p.distill[s].alphas)) == len(p.distill[s].alphas), f"distill.{s}.alphas",
           list(p.distill[s].alphas), "a list without duplicates")
    _check(0.0 <= p.distill[s].beta <= 1.0, f"distill.{s}.beta", p.distill[s].beta, "in [0, 1]")
    _check(0 <= p.distill[s].stop_margin < 1, f"distill.{s}.stop_margin", p.distill[s].stop_margin,
           "in [0, 1): the student stops once its retain accuracy is within this margin of the teacher's")
    _check(p.distill[s].stop_consecutive >= 1, f"distill.{s}.stop_consecutive", p.distill[s].stop_consecutive, ">= 1")
    _check(p.distill[s].train.eval_every > 0, f"distill.{s}.train.eval_every", p.distill[s].train.eval_every,
           "a positive integer: the stop rule is checked every eval_every steps")
    lrs = p.relearn[s].lrs
    _check(len(lrs) > 0, f"relearn.{s}.lrs", list(lrs), "a non-empty list of learning rates")
    _check(all(0 < lr < math.inf for lr in lrs), f"relearn.{s}.lrs", list(lrs), "a list of positive finite numbers")
    _check(len(set(lrs)) == len(lrs), f"relearn.{s}.lrs", list(lrs), "a list without duplicates")
    _check(p.relearn[s].train.eval_every > 0, f"relearn.{s}.train.eval_every", p.relearn[s].train.eval_every,
           "a positive integer")
    _check(p.evaluate[s].batch_size > 0, f"evaluate.{s}.batch_size", p.evaluate[s].batch_size, "a positive integer")
    _check(p.evaluate[s].max_new_tokens > 0, f"evaluate.{s}.max_new_tokens", p.evaluate[s].max_new_tokens,
           "a positive integer")
    _check(p.unlearn[s].MaxEnt.retain_weight >= 0, f"unlearn.{s}.MaxEnt.retain_weight",
           p.unlearn[s].MaxEnt.retain_weight, ">= 0")
    _check(p.figures[s].robustness_step >= 0, f"figures.{s}.robustness_step", p.figures[s].robustness_step, ">= 0")
    _check(p.figures[s].robustness_step <= p.relearn[s].train.steps, f"figures.{s}.robustness_step",
           p.figures[s].robustness_step, f"<= relearn.{s}.train.steps={p.relearn[s].train.steps}")


def validate(p: Params) -> Params:
    """Check cross-field rules and value ranges; return ``p`` unchanged or raise ParamsError."""
    _check(len(p.shared.settings) > 0, "shared.settings", list(p.shared.settings), f"a non-empty subset of {list(SETTINGS)}")
    _check(p.shared.torch_threads >= 0, "shared.torch_threads", p.shared.torch_threads, ">= 0")
    for s in p.shared.settings:
        _check(s in SETTINGS, "shared.settings", s, f"one of {list(SETTINGS)}")
        for section in ("data", "tokenizer", "model", "pretrain", "unlearn", "distill", "relearn",
                        "evaluate", "figures"):
            if s not in getattr(p, section):
                raise ParamsError(f"{section}.{s}: missing. Setting '{s}' is listed in shared.settings, "
                                  f"so params.yaml needs a '{section}: {{{s}: ...}}' section.")
        _validate_setting(p, s)
    return p


def params_from_dict(data: dict) -> Params:
    """Build and validate Params from a parsed params.yaml mapping."""
    if not isinstance(data, dict):
        raise ParamsError(f"params.yaml must contain a mapping of sections, got {type(data).__name__}.")
    return validate(_build(Params, data, ""))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, type-check and validate ``path``; raise ParamsError naming the key on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}. Run from the repository root or pass its path.")
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return params_from_dict(data)


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
