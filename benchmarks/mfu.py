"""Model FLOPs utilisation (MFU) of the shared training loop, meant for a GPU in bf16.

MFU is the model FLOPs a training step does per second divided by the accelerator's peak rate.
The model FLOPs per token are counted two ways:

- ``6·N``: the count every stage records (``undo_lib.compute``), N the parameters with the tied
  embedding counted once. It leaves out attention's scores and weighted sums.
- ``6·N + 12·L·A·T``: adds them. Per layer and token, the forward pass multiplies the query with
  T keys and the T attention weights with T values, A·T multiply-adds each (A = heads ×
  head_dim), so 4·A·T FLOPs. The backward pass costs twice the forward, so 12·A·T per layer in
  all. Causal masking and Gemma2's sliding window are ignored, which overstates the work.

The step timed is ``undo_lib.train.train`` with ``lm_loss`` on one fixed batch (as in
``benchmarks.train_step``), with the params file's model, vocabulary, sequence length and
pretraining batch size, and ``--precision`` for the loop's autocast (bf16 by default, although
the profile pretrains in fp32: ``--precision fp32`` times it as configured). The GPU is
synchronised before the clock starts and before it stops.

Usage, on a GPU, with the language model of the paper-scale profile (the paper's 0.1B shape; the
profile's 65,536-token vocabulary makes it about 52M parameters instead):
``python -m benchmarks.mfu --params profiles/paper-gpu.yaml --setting language --peak-tflops PEAK
--out docs/mfu.md``. PEAK is the GPU's dense bf16 rate from its datasheet; the script does not
guess it. ``--device cpu`` exists so that the tests can run the script; CPU MFU means little.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.train_step import Workload, _count, machine_line, make_batch, workload_from_params
from undo_lib.compute import train_flops_per_token
from undo_lib.config import SETTINGS, load_params
from undo_lib.losses import lm_loss
from undo_lib.model import build_model, count_parameters
from undo_lib.train import train

logger = logging.getLogger(__name__)

MIN_MFU = 0.40  # this project's target for the 0.1B model in bf16 on a GPU, judged on the 6·N count


@dataclass(frozen=True)
class MFUResult:
    """One setting's timing and its MFU under both FLOP counts."""

    setting: str
    n_params: int
    tokens_per_step: int
    seconds_per_step: float
    flops_per_token: float  # 6·N
    attention_flops_per_token: float  # 12·L·A·T
    peak_flops: float  # per second

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.seconds_per_step

    @property
    def mfu(self) -> float:
        return self.tokens_per_second * self.flops_per_token / self.peak_flops

    @property
    def mfu_with_attention(self) -> float:
        return self.tokens_per_second * (self.flops_per_token + self.attention_flops_per_token) / self.peak_flops


def attention_flops_per_token(workload: Workload) -> float:
    """Return 12·L·A·T, the FLOPs per token of attention's two matmuls, forward and backward."""
    model = workload.model
    return 12.0 * model.num_hidden_layers * model.num_attention_heads * model.head_dim * workload.seq_len


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model: torch.nn.Module, workload: Workload, precision: str, steps: int, warmup: int) -> float:
    """Return the seconds per step of ``train`` on ``workload``'s fixed batch, after ``warmup`` untimed steps."""
    device = next(model.parameters()).device
    batch = {name: tensor.to(device) for name, tensor in make_batch(workload).items()}
    flops = train_flops_per_token(count_parameters(model))  # train records it; the MFU is computed apart

    def run(count: int) -> None:
        params = dataclasses.replace(workload.train, steps=count, precision=precision)
        train(model, lm_loss, itertools.repeat(batch), params, flops_per_token=flops)

    if warmup > 0:
        run(warmup)
    _synchronize(device)
    start = time.perf_counter()
    run(steps)
    _synchronize(device)
    return (time.perf_counter() - start) / steps


def measure(workload: Workload, device: torch.device, precision: str, steps: int, warmup: int,
            peak_tflops: float) -> MFUResult:
    """Time ``workload`` and return its MFU against ``peak_tflops`` (10^12 FLOPs per second)."""
    model = build_model(workload.model, workload.vocab_size, seed=workload.seed).to(device)
    n_params = count_parameters(model)
    seconds = time_training(model, workload, precision, steps, warmup)
    return MFUResult(setting=workload.setting, n_params=n_params, tokens_per_step=workload.tokens_per_step,
                     seconds_per_step=seconds, flops_per_token=train_flops_per_token(n_params),
                     attention_flops_per_token=attention_flops_per_token(workload), peak_flops=peak_tflops * 1e12)


def device_line(device: torch.device) -> str:
    """Describe the device the step ran on: the GPU's name and memory, or the CPU line of the step benchmark."""
    if device.type != "cuda":
        return machine_line()
    properties = torch.cuda.get_device_properties(device)
    return (f"Machine: {properties.name}, {properties.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}; "
            f"torch {torch.__version__}.")


def results_markdown(results: Sequence[MFUResult], device: torch.device, precision: str, command: str,
                     date: str) -> str:
    """Format the results as the Markdown page ``--out`` writes."""
    peak = results[0].peak_flops / 1e12
    lines = [
        "# Benchmark: model FLOPs utilisation",
        "",
        "<!-- Written by `python -m benchmarks.mfu --out`. Edit benchmarks/mfu.py, not this page. -->",
        "",
        "What is counted and timed: the module docstring of `benchmarks/mfu.py`.",
        "",
        device_line(device),
        "",
        f"Command: `{command}`",
        "",
        f"Date: {date}. Precision: {precision}. Peak: {peak:g} TFLOP/s (given on the command line).",
        "",
        "| setting | parameters | tokens/step | s/step | tokens/s | MFU (6·N) | MFU (with attention) | "
        f"6·N MFU ≥ {MIN_MFU:.0%} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    judged = device.type == "cuda" and precision == "bf16"  # the target is set for a GPU in bf16 only
    for r in results:
        met = "n/a"
        if judged:
            met = "yes" if r.mfu >= MIN_MFU else "**no**"
        lines.append(f"| {r.setting} | {r.n_params:,} | {r.tokens_per_step:,} | {r.seconds_per_step:.4f} | "
                     f"{r.tokens_per_second:,.0f} | {r.mfu:.1%} | {r.mfu_with_attention:.1%} | {met} |")
    return "\n".join(lines) + "\n"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {value}: use a number > 0")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mfu", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="profiles/paper-gpu.yaml", type=Path,
                        help="params file with the model and batch shapes (default: profiles/paper-gpu.yaml)")
    parser.add_argument("--setting", nargs="+", choices=SETTINGS, default=["language"],
                        help="settings to time, one table row each (default: language, the paper's 0.1B shape)")
    parser.add_argument("--peak-tflops", type=_positive, required=True,
                        help="the device's peak rate at --precision in 10^12 FLOP/s, from its datasheet")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="default: cuda")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                        help="the training loop's autocast (default: bf16)")
    parser.add_argument("--batch-size", type=_count(1), default=None,
                        help="rows per step instead of pretrain.<setting>.batch_size")
    parser.add_argument("--steps", type=_count(1), default=20, help="timed steps (default: 20)")
    parser.add_argument("--warmup", type=_count(0), default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown page here, e.g. docs/mfu.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[MFUResult]:
    """Measure MFU for the settings in ``argv``, print the table and write the page if asked."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible. Run on a GPU machine, or pass --device cpu "
                         "to try the script.")
    command = shlex.join(["python", "-m", "benchmarks.mfu", *(sys.argv[1:] if argv is None else argv)])
    params = load_params(args.params)
    device = torch.device(args.device)
    results = []
    for setting in args.setting:
        workload = workload_from_params(params, setting)
        if args.batch_size is not None:
            workload = dataclasses.replace(workload, batch_size=args.batch_size)
        results.append(measure(workload, device, args.precision, args.steps, args.warmup, args.peak_tflops))

    page = results_markdown(results, device, args.precision, command,
                            datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    print(page)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page, encoding="utf-8")
        logger.info("wrote %s", args.out)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logger.setLevel(logging.INFO)
    main()
