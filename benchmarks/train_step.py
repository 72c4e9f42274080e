"""Seconds per training step: the shared loop against a bare PyTorch loop, and distillation.

Every stage trains through ``undo_lib.train.train``. Besides forward, backward, clipping and the
AdamW step, that loop sets the learning rate and checks the loss and the gradient norm for NaN or
infinity. It also reads both with ``.item()`` for the history row and counts tokens, and
``lm_loss`` selects the counted targets with a boolean mask. This benchmark measures what that
adds per step by timing the same model on the same batch three ways:

- ``ours``: ``train`` with ``lm_loss``, constant LR, no evaluation, no checkpoints.
- ``minimal``: a hand-written loop with the same AdamW settings and clipping.
- ``distill``: ``train`` with ``make_distill_loss``, whose frozen teacher of the same shape runs one
  extra forward pass per step. The FLOP count (2·N per token on top of the student's 6·N) puts
  that step at about 1.33 times an ``ours`` step, an estimate that ignores attention.

A ``torch.no_grad()`` forward of the batch is timed too, so a reader sees how a step splits
between the forward pass and the rest. Each repeat runs every variant once, in an order that
rotates from repeat to repeat, so a change in machine load hits all of them alike. Each variant
starts from a fresh copy of the same weights and runs untimed warmup steps before the timed ones.

Usage: ``python -m benchmarks.train_step --setting arithmetic --out docs/benchmarks.md``.

NOTE: CPU only. The timings do not synchronise a GPU, so no ``--device`` option is offered.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import itertools
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
import transformers

from undo_lib.compute import forward_flops_per_token, train_flops_per_token
from undo_lib.config import SETTINGS, ModelParams, Params, TrainParams, load_params
from undo_lib.distill import make_distill_loss
from undo_lib.losses import lm_loss
from undo_lib.model import build_model, count_parameters
from undo_lib.tokenizer import UNK_ID
from undo_lib.train import train

logger = logging.getLogger(__name__)

VARIANTS = ("ours", "minimal", "distill")  # the timed training steps
FORWARD = "forward"  # the no-grad forward pass, timed alongside them
DESCRIPTIONS = {
    "ours": "`undo_lib.train.train` with `lm_loss`",
    "minimal": "bare loop: forward, cross-entropy, backward, clip, AdamW",
    "distill": "`train` with `make_distill_loss` (frozen teacher forward + student step)",
    FORWARD: "one `torch.no_grad()` forward of the batch",
}
# Acceptance targets for the ratios of medians. The report marks each as met or not.
MAX_OURS_OVER_MINIMAL = 1.15
MAX_DISTILL_OVER_OURS = 1.4

StepRunner = Callable[[torch.nn.Module, dict, int], None]  # runs the given number of steps in place


# ----------------------------------------------------------------------------------------------
# What is timed


@dataclass(frozen=True)
class Workload:
    """Model shape, batch shape and optimizer settings of one setting's benchmark."""

    setting: str
    model: ModelParams
    vocab_size: int
    seq_len: int
    batch_size: int
    # LR, weight decay and clipping, with a constant LR, one micro-batch per step, no evaluation and no checkpoints
    train: TrainParams
    seed: int = 0  # seed of the student's weights (the teacher's is seed + 1 and the batch's seed + 2)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


def workload_from_params(params: Params, setting: str) -> Workload:
    """Build ``setting``'s workload from ``params``.

    The model shape comes from ``model.<setting>``, the vocabulary size from
    ``tokenizer.<setting>.vocab_size`` and the sequence length from ``data.<setting>.seq_len``.
    Batch size, LR, weight decay and clipping come from ``pretrain.<setting>``.
    """
    for section in ("data", "tokenizer", "model", "pretrain"):
        if setting not in getattr(params, section):
            raise ValueError(f"missing section {section}.{setting} in the params file. "
                             "Add it or choose another setting.")
    pretrain = params.pretrain[setting]
    constant = dataclasses.replace(pretrain, min_lr=pretrain.lr, warmup_steps=0, grad_accum=1,
                                   eval_every=0, checkpoint_every=0)
    return Workload(setting=setting, model=params.model[setting],
                    vocab_size=params.tokenizer[setting].vocab_size, seq_len=params.data[setting].seq_len,
                    batch_size=pretrain.batch_size, train=constant, seed=params.shared.seed)


def make_batch(workload: Workload) -> dict[str, torch.Tensor]:
    """Build one fixed batch of random token ids with every position a loss target.

    Ids start above the special tokens (pad, eos, bos, unk), as ordinary text would.
    """
    generator = torch.Generator().manual_seed(workload.seed + 2)
    shape = (workload.batch_size, workload.seq_len)
    input_ids = torch.randint(UNK_ID + 1, workload.vocab_size, shape, generator=generator)
    return {"input_ids": input_ids, "loss_mask": torch.ones_like(input_ids, dtype=torch.bool)}


def _max_grad_norm(params: TrainParams) -> float:
    return params.max_grad_norm if params.max_grad_norm > 0 else float("inf")  # as undo_lib.train does


def _ours_runner(params: TrainParams, n_params: int) -> StepRunner:
    def run(model: torch.nn.Module, batch: dict, steps: int) -> None:
        train(model, lm_loss, itertools.repeat(batch), dataclasses.replace(params, steps=steps),
              flops_per_token=train_flops_per_token(n_params))

    return run


def _minimal_runner(params: TrainParams) -> StepRunner:
    def run(model: torch.nn.Module, batch: dict, steps: int) -> None:
        # foreach, as in undo_lib.train, so the ratio measures the loop and not the optimizer's kernels
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=params.weight_decay, foreach=True)
        max_norm = _max_grad_norm(params)
        input_ids = batch["input_ids"]
        model.train()
        for _ in range(steps):
            logits = model(input_ids=input_ids).logits
            vocab = logits.shape[-1]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), input_ids[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def _distill_runner(params: TrainParams, n_params: int, teacher: torch.nn.Module) -> StepRunner:
    loss_fn = make_distill_loss(teacher)
    flops_per_token = train_flops_per_token(n_params) + forward_flops_per_token(n_params)

    def run(model: torch.nn.Module, batch: dict, steps: int) -> None:
        train(model, loss_fn, itertools.repeat(batch), dataclasses.replace(params, steps=steps),
              flops_per_token=flops_per_token)

    return run


def _forward_runner(model: torch.nn.Module, batch: dict, steps: int) -> None:
    with torch.no_grad():
        for _ in range(steps):
            model(input_ids=batch["input_ids"])


# ----------------------------------------------------------------------------------------------
# Timing


@dataclass
class VariantTiming:
    """Seconds per step of one variant, one value per repeat."""

    name: str
    tokens_per_step: int
    seconds_per_step: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds_per_step)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.median


@dataclass
class BenchmarkResult:
    """Timings of every variant of one workload, with the counts that produced them."""

    workload: Workload
    n_params: int  # parameters of one model (the tied embedding counted once)
    steps: int  # timed steps per variant and repeat
    warmup: int  # untimed steps before them
    repeats: int
    timings: dict[str, VariantTiming]  # VARIANTS, then FORWARD

    @property
    def ours_over_minimal(self) -> float:
        return self.timings["ours"].median / self.timings["minimal"].median

    @property
    def distill_over_ours(self) -> float:
        return self.timings["distill"].median / self.timings["ours"].median

    @property
    def forward_share(self) -> float:
        """A no-grad forward's time as a fraction of an ``ours`` step."""
        return self.timings[FORWARD].median / self.timings["ours"].median


def time_steps(run: StepRunner, base: torch.nn.Module, batch: dict, steps: int, warmup: int, seed: int) -> float:
    """Run ``warmup`` untimed then ``steps`` timed steps on a fresh copy of ``base`` and return seconds per step."""
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    if warmup > 0:
        run(model, batch, warmup)
    gc.collect()  # so no collection of an earlier variant's garbage lands in this one's timed steps
    start = time.perf_counter()
    run(model, batch, steps)
    return (time.perf_counter() - start) / steps


def _rotated(names: Sequence[str], shift: int) -> list[str]:
    shift %= len(names)
    return list(names[shift:]) + list(names[:shift])


def run_benchmark(workload: Workload, steps: int, warmup: int, repeats: int) -> BenchmarkResult:
    """Time every variant ``repeats`` times on one model and one batch, as the module docstring describes."""
    if steps < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"invalid counts: steps={steps}, warmup={warmup}, repeats={repeats}. "
                         "Use steps >= 1, warmup >= 0 and repeats >= 1.")
    base = build_model(workload.model, workload.vocab_size, seed=workload.seed)
    teacher = build_model(workload.model, workload.vocab_size, seed=workload.seed + 1)
    n_params = count_parameters(base)
    batch = make_batch(workload)
    runners: dict[str, StepRunner] = {
        "ours": _ours_runner(workload.train, n_params),
        "minimal": _minimal_runner(workload.train),
        "distill": _distill_runner(workload.train, n_params, teacher),
        FORWARD: _forward_runner,
    }
    timings = {name: VariantTiming(name, workload.tokens_per_step) for name in runners}

    for repeat in range(repeats):
        repeat_start = time.perf_counter()
        for name in _rotated(list(runners), repeat):
            seconds = time_steps(runners[name], base, batch, steps, warmup, workload.seed)
            timings[name].seconds_per_step.append(seconds)
            logger.info("%s repeat %d/%d: %s %.4f s/step", workload.setting, repeat + 1, repeats, name, seconds)
        logger.info("%s repeat %d/%d took %.1f s", workload.setting, repeat + 1, repeats,
                    time.perf_counter() - repeat_start)

    return BenchmarkResult(workload, n_params, steps, warmup, repeats, timings)


# ----------------------------------------------------------------------------------------------
# Report


def _cpu_model() -> str:
    """Return the CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """Describe in one line the CPU, core counts, software versions and thread count behind the timings."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"Machine: {_cpu_model()}, {os.cpu_count()} cores ({usable} usable by this process), "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
            f"torch {torch.__version__} with {torch.get_num_threads()} intra-op threads, "
            f"transformers {transformers.__version__}.")


def _target_cell(value: float, limit: float) -> str:
    return "yes" if value <= limit else "**no**"


def results_table(result: BenchmarkResult) -> str:
    """Format each variant's median seconds per step and tokens per second as a Markdown table."""
    lines = [
        "| variant | what one step does | median s/step | tokens/s | min–max s/step |",
        "|---|---|---|---|---|",
    ]
    for name, timing in result.timings.items():
        low, high = min(timing.seconds_per_step), max(timing.seconds_per_step)
        lines.append(f"| {name} | {DESCRIPTIONS[name]} | {timing.median:.4f} | {timing.tokens_per_second:,.0f} "
                     f"| {low:.4f}–{high:.4f} |")
    return "\n".join(lines)


def ratios_table(result: BenchmarkResult) -> str:
    """Format the ratios of medians and their targets as a Markdown table."""
    overhead, distill = result.ours_over_minimal, result.distill_over_ours
    return "\n".join([
        "| ratio of medians | value | target | met |",
        "|---|---|---|---|",
        f"| ours / minimal | {overhead:.3f} | ≤ {MAX_OURS_OVER_MINIMAL} | "
        f"{_target_cell(overhead, MAX_OURS_OVER_MINIMAL)} |",
        f"| distill / ours | {distill:.3f} | ≤ {MAX_DISTILL_OVER_OURS} | "
        f"{_target_cell(distill, MAX_DISTILL_OVER_OURS)} |",
        f"| forward / ours | {result.forward_share:.3f} | – | – |",
    ])


def setting_section(result: BenchmarkResult) -> str:
    """Format one workload's section: its shape, the timings table and the ratios table."""
    w, m = result.workload, result.workload.model
    shape = (f"Model: Gemma2 with {result.n_params:,} parameters (layers {m.num_hidden_layers}, hidden "
             f"{m.hidden_size}, attention heads {m.num_attention_heads}, key-value heads {m.num_key_value_heads}, "
             f"MLP {m.intermediate_size}, vocabulary {w.vocab_size}), float32. Batch: {w.batch_size} × "
             f"{w.seq_len} tokens ({w.tokens_per_step:,} per step). Optimizer: AdamW at constant LR "
             f"{w.train.lr:g}, weight decay {w.train.weight_decay:g}, gradient clipping at "
             f"{w.train.max_grad_norm:g}. Steps: {result.steps} timed after {result.warmup} warmup, "
             f"per variant and repeat; medians over {result.repeats} repeats.")
    forward = (f"A no-grad forward takes {result.forward_share:.0%} of an `ours` step. The rest is the "
               "backward pass, clipping, the optimizer step and the loop's own work.")
    return "\n\n".join([f"### {w.setting}", shape, results_table(result), ratios_table(result), forward])


def results_markdown(results: Sequence[BenchmarkResult], command: str, date: str) -> str:
    """Format the Results section's body: machine, command, date, then one section per setting."""
    header = "\n".join([machine_line(), "", f"Command: `{command}`", "", f"Date: {date}"])
    return "\n\n".join([header, *(setting_section(r) for r in results)])


PAGE_TEMPLATE = """\
# Benchmark: seconds per training step

<!-- Written by `python -m benchmarks.train_step --out`. Edit benchmarks/train_step.py, not this page. -->

Every stage of the pipeline trains through one loop, `undo_lib.train.train`. This page measures
what that loop costs per step compared with a bare PyTorch loop that does the same forward,
backward, clipping and AdamW step (target: ours / minimal ≤ {max_overhead}). The loop's extra
work is the per-step learning-rate update, finiteness checks on the loss and the gradient norm,
`.item()` reads for the history row, token counting and masked target selection in the loss.

It also measures a distillation step, which adds a frozen teacher's forward pass to a training
step (target: distill / ours ≤ {max_distill}). By the usual FLOP count, 2·N per token for the
teacher's forward next to 6·N for the student's forward and backward, that ratio is about 1.33.
This estimate ignores attention and the loss, which the FLOP count leaves out.
A no-grad forward of the batch is timed as well, to show how a step splits between the forward
pass and the rest.

All variants use the same randomly initialised model, the same fixed batch of random tokens and
the same thread count. Each starts from a fresh copy of the weights and runs warmup steps before
the timed ones. The variants take turns within each repeat, and the table reports the median
over repeats.

## How to run

`python -m benchmarks.train_step --setting arithmetic language --out docs/benchmarks.md` times
both settings at the shapes in `params.yaml`. Options: `--params FILE`, `--steps N` (timed),
`--warmup N` (untimed), `--repeats N`, `--threads N` (torch intra-op threads, where 0 keeps torch's
default) and `--out FILE`. Run it on an otherwise idle machine, because other load slows every
variant and the ratios only partly cancel it.

## Results

{results}
"""


def render_page(results: Sequence[BenchmarkResult], command: str, date: str) -> str:
    """Render the whole Markdown page: introduction, how to run, and the Results section filled in."""
    return PAGE_TEMPLATE.format(max_overhead=MAX_OURS_OVER_MINIMAL, max_distill=MAX_DISTILL_OVER_OURS,
                                results=results_markdown(results, command, date))


# ----------------------------------------------------------------------------------------------
# Command line


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"invalid value {value}: use an integer >= {minimum}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--setting", nargs="+", choices=SETTINGS, default=["arithmetic"],
                        help="settings whose model and batch shapes to time, one section each (default: arithmetic)")
    parser.add_argument("--params", default="params.yaml", type=Path,
                        help="params file with the shapes and optimizer settings (default: params.yaml)")
    parser.add_argument("--steps", type=_count(1), default=30,
                        help="timed steps per variant and repeat (default: 30)")
    parser.add_argument("--warmup", type=_count(0), default=5,
                        help="untimed steps per variant before the timed ones (default: 5)")
    parser.add_argument("--repeats", type=_count(1), default=3,
                        help="rounds of all variants, whose median the report shows (default: 3)")
    parser.add_argument("--threads", type=_count(0), default=None,
                        help="torch intra-op threads, where 0 keeps torch's default (default: shared.torch_threads)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the whole Markdown page to this file, e.g. docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[BenchmarkResult]:
    """Run the benchmark for the settings in ``argv``, print the results and write the page if asked."""
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.train_step", *(sys.argv[1:] if argv is None else argv)])
    params = load_params(args.params)
    threads = params.shared.torch_threads if args.threads is None else args.threads
    if threads > 0:
        torch.set_num_threads(threads)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    results = []
    for setting in args.setting:
        workload = workload_from_params(params, setting)
        results.append(run_benchmark(workload, args.steps, args.warmup, args.repeats))

    print(results_markdown(results, command, date))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render_page(results, command, date), encoding="utf-8")
        logger.info("wrote %s", args.out)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logger.setLevel(logging.INFO)
    main()
