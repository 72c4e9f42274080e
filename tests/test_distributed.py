"""Tests for undo_lib.distributed: row sharding and its errors, and data-parallel training in two CPU
processes (gloo) that ends with the weights and loss history of one process on the same global batches.
"""

import math
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.utils import DistributedType

from undo_lib.compute import timing_record
from undo_lib.config import MaxEntParams, RMUParams, TrainParams
from undo_lib.data import PackedData, batches, paired_batches
from undo_lib.distill import make_distill_loss
from undo_lib.distributed import (DISTRIBUTED, ShardedBatches, _stop, launch, run_training, shard_batch,
                                  train_distributed)
from undo_lib.evaluate import text_ce
from undo_lib.losses import lm_loss
from undo_lib.methods import make_loss
from undo_lib.model import build_model
from undo_lib.train import DivergenceError, train

VOCAB = 320
SEQ_LEN = 16
BATCH_SIZE = 4  # global micro-batch: 2 rows per process in the two-process runs
FLOPS_PER_TOKEN = 1000.0
PROCESSES = 2

# Tolerance for two processes against one, in float32 on CPU. The runs differ only in rounding: two
# processes average their half-batch gradients after the backward pass, while one process reduces all
# rows inside it, and the matmuls see 2 rows instead of 4. AdamW divides each gradient element by its
# running RMS, so a rounding error of a few float32 ulps (1.2e-7 relative) in a small gradient becomes
# a larger relative error in that element's update. Measured with torch 2.13.0 on a 2-core x86_64 CPU,
# one thread per process (as conftest sets, and as run_training gives each of 2 processes of a
# 2-thread caller): largest weight difference 1.4e-6 (in the embedding), largest difference in
# the loss, gradient norm or held-out CE 8.3e-7. The tolerance leaves about 7 times that. A broken
# split, with both processes on the same 2 rows, moves weights by up to 9e-2, and
# test_tolerance_detects_half_batches checks that the tolerance rejects it.
ATOL = 1e-5
RTOL = 1e-5


def _packed(sequences: int, seed: int) -> PackedData:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (sequences, SEQ_LEN), generator=generator)
    return PackedData(ids, torch.ones_like(ids, dtype=torch.bool))


def _train_batches():
    return batches(_packed(sequences=32, seed=1), BATCH_SIZE, seed=2)


def _params(**overrides) -> TrainParams:
    values = {"steps": 8, "batch_size": BATCH_SIZE, "grad_accum": 2, "lr": 1e-2, "min_lr": 1e-3,
              "warmup_steps": 2, "weight_decay": 0.1, "max_grad_norm": 1.0, "eval_every": 2}
    values.update(overrides)
    return TrainParams(**values)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


class HeldOutCE:
    """Evaluator of the CE on fixed held-out sequences that records the process and model class of each call."""

    def __init__(self):
        self.data = _packed(sequences=4, seed=3)
        self.calls: list[tuple[int, str]] = []

    def __call__(self, model) -> dict:
        self.calls.append((_rank(), type(model).__name__))
        return {"held_out_ce": text_ce(model, self.data, batch_size=4)}


class StopAtCall:
    """Stop rule that fires on its ``number``-th call and records the process of each call."""

    def __init__(self, number: int):
        self.number = number
        self.calls: list[int] = []

    def __call__(self, metrics: dict) -> bool:
        self.calls.append(_rank())
        return len(self.calls) == self.number


class CheckpointingProbe:
    """``lm_loss`` that records whether the model it receives recomputes activations (gradient checkpointing)."""

    def __init__(self):
        self.checkpointing: set[bool] = set()

    def __call__(self, model, batch: dict):
        inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        self.checkpointing.add(inner.is_activation_checkpointing)
        return lm_loss(model, batch)


def _run(train_fn, model_params, params: TrainParams, train_batches=None, **kwargs) -> dict:
    """Train a fresh tiny Gemma2 with ``train_fn`` and return what the tests compare."""
    model = build_model(model_params, VOCAB, seed=0)
    loss_fn, evaluator, stop = CheckpointingProbe(), HeldOutCE(), StopAtCall(3)  # the third check is at step 6 of 8
    train_batches = _train_batches() if train_batches is None else train_batches
    result = train_fn(model, loss_fn, train_batches, params, FLOPS_PER_TOKEN, evaluator, stop, **kwargs)
    return {"weights": {k: v.detach().clone() for k, v in model.state_dict().items()}, "result": result,
            "evaluate_calls": evaluator.calls, "stop_calls": stop.calls,
            "checkpointing_in_training": loss_fn.checkpointing,
            "checkpointing_after": model.is_activation_checkpointing}


def _two_process_worker(out_dir, model_params, runs: dict) -> None:
    """Train every configuration in ``runs`` in each launched process, and save each process's run to a file."""
    from accelerate import Accelerator

    for name, params in runs.items():
        accelerator = Accelerator()
        torch.set_num_threads(1)  # as conftest sets here, where accelerate would set cores / processes
        run = _run(train_distributed, model_params, params, accelerator=accelerator)
        run["process_index"], run["num_processes"] = accelerator.process_index, accelerator.num_processes
        torch.save(run, out_dir / f"{name}-rank{accelerator.process_index}.pt")


def _mismatched_logs_worker(model_params) -> None:
    """Train in each launched process with a loss that logs an extra column on process 1 only."""
    torch.set_num_threads(1)

    def loss_fn(model, batch):
        loss, logs = lm_loss(model, batch)
        return loss, ({"extra": 0.0} if torch.distributed.get_rank() == 1 else logs)

    model = build_model(model_params, VOCAB, seed=0)
    train_distributed(model, loss_fn, _train_batches(), _params(steps=1, eval_every=0), FLOPS_PER_TOKEN)


def _submodule_loss_worker(model_params) -> None:
    """Train in each launched process with a loss that calls the decoder submodule of the model."""
    torch.set_num_threads(1)

    def loss_fn(model, batch):
        hidden = model.model(input_ids=batch["input_ids"]).last_hidden_state
        return hidden.pow(2).mean(), {}

    model = build_model(model_params, VOCAB, seed=0)
    train_distributed(model, loss_fn, _train_batches(), _params(steps=1, eval_every=0), FLOPS_PER_TOKEN)


# shard_batch and ShardedBatches


def test_shard_batch_rows():
    batch = {"input_ids": torch.arange(12).view(6, 2)}

    shard = shard_batch(batch, rank=1, world_size=3)

    assert torch.equal(shard["input_ids"], torch.tensor([[4, 5], [6, 7]]))


def test_shard_batch_nested():
    batch = {"forget": {"input_ids": torch.arange(4)}, "retain": {"input_ids": torch.arange(10, 18).view(4, 2)}}

    shard = shard_batch(batch, rank=1, world_size=2)

    assert torch.equal(shard["forget"]["input_ids"], torch.tensor([2, 3]))
    assert torch.equal(shard["retain"]["input_ids"], torch.tensor([[14, 15], [16, 17]]))


def test_shards_cover_every_row_once():
    batch = {"input_ids": torch.arange(24).view(8, 3), "loss_mask": torch.rand(8, 3) > 0.5}

    shards = [shard_batch(batch, rank, world_size=4) for rank in range(4)]

    for key in batch:
        assert torch.equal(torch.cat([shard[key] for shard in shards]), batch[key]), key


def test_shard_batch_one_process_unchanged():
    batch = {"input_ids": torch.arange(6).view(3, 2)}

    assert torch.equal(shard_batch(batch, rank=0, world_size=1)["input_ids"], batch["input_ids"])


def test_shard_batch_uneven_rows_rejected():
    batch = {"retain": {"input_ids": torch.zeros(5, 2)}}

    with pytest.raises(ValueError, match=r"batch\['retain.input_ids'\] has 5 rows.*multiple of 2"):
        shard_batch(batch, rank=0, world_size=2)


def test_shard_batch_non_tensor_rejected():
    with pytest.raises(TypeError, match=r"batch\['text'\] must be a tensor.*got list"):
        shard_batch({"text": ["a", "b"]}, rank=0, world_size=2)


def test_shard_batch_scalar_rejected():
    with pytest.raises(TypeError, match=r"batch\['weight'\] must be a tensor with a batch dimension"):
        shard_batch({"weight": torch.tensor(1.0)}, rank=0, world_size=2)


@pytest.mark.parametrize("rank, world_size, message", [
    (2, 2, r"rank must be in \[0, 2\) for world_size=2, got 2"),
    (-1, 2, r"rank must be in \[0, 2\) for world_size=2, got -1"),
    (0, 0, "world_size must be >= 1, got 0"),
])
def test_shard_batch_bad_rank_rejected(rank, world_size, message):
    with pytest.raises(ValueError, match=message):
        shard_batch({"input_ids": torch.zeros(4, 2)}, rank=rank, world_size=world_size)


def test_sharded_batches_skip():
    sharded = ShardedBatches(_train_batches(), rank=1, world_size=2)
    reference = _train_batches()

    sharded.skip(11)  # past the 8 batches of the first epoch
    for _ in range(11):
        next(reference)

    assert torch.equal(next(sharded)["input_ids"], next(reference)["input_ids"][2:])


def test_sharded_batches_skip_without_skip_method():
    global_batches = ({"input_ids": torch.full((2, 1), i)} for i in range(10))
    sharded = ShardedBatches(global_batches, rank=0, world_size=2)

    sharded.skip(3)

    assert torch.equal(next(sharded)["input_ids"], torch.tensor([[3]]))


# train_distributed: rejected settings and one process


def _fake_accelerator(**overrides):
    """Stand-in with the attributes that train_distributed checks before it trains."""
    values = {"num_processes": 2, "mixed_precision": "no", "distributed_type": DistributedType.MULTI_CPU}
    values.update(overrides)
    return types.SimpleNamespace(**values)


@pytest.mark.parametrize("params, accelerator, message", [
    (_params(batch_size=5), _fake_accelerator(), "batch_size=5 is not a multiple of the 2 processes"),
    (_params(checkpoint_every=2), _fake_accelerator(), "checkpoint_every=2 is not supported with 2 processes"),
    (_params(), _fake_accelerator(mixed_precision="bf16"), "mixed_precision='bf16'.*train.precision: bf16"),
    (_params(), _fake_accelerator(distributed_type=DistributedType.FSDP), "FSDP is not supported"),
], ids=["uneven batch", "checkpoints", "mixed precision", "FSDP"])
def test_train_distributed_rejects(tiny_model_params, tmp_path, params, accelerator, message):
    model = build_model(tiny_model_params, VOCAB, seed=0)

    with pytest.raises(ValueError, match=message):
        train_distributed(model, lm_loss, _train_batches(), params, FLOPS_PER_TOKEN, checkpoint_dir=tmp_path,
                          accelerator=accelerator)


@pytest.mark.parametrize("params, distributed, message", [
    (_params(), "zero", r"distributed='zero' is invalid; expected one of \['ddp', 'fsdp'\]"),
    (_params(sam_rho=0.05), "fsdp", "sam_rho=0.05 is not supported with distributed='fsdp'"),
], ids=["unknown", "SAM with FSDP"])
def test_train_distributed_rejects_strategy(tiny_model_params, params, distributed, message):
    model = build_model(tiny_model_params, VOCAB, seed=0)

    with pytest.raises(ValueError, match=message):
        train_distributed(model, lm_loss, _train_batches(), params, FLOPS_PER_TOKEN, accelerator=_fake_accelerator(),
                          distributed=distributed)


def test_launch_rejects_zero_processes():
    with pytest.raises(ValueError, match="num_processes must be >= 1, got 0"):
        launch(print, (), num_processes=0)


def test_one_process_equals_train(tiny_model_params):
    # Also leaves an Accelerator state in this process, which the forked processes below must not inherit
    reference = _run(train, tiny_model_params, _params())
    calls = []

    launch(lambda: calls.append(_run(train_distributed, tiny_model_params, _params())), num_processes=1)

    run = calls[0]
    assert run["result"].history == reference["result"].history
    for name, weight in reference["weights"].items():
        assert torch.equal(run["weights"][name], weight), name


def test_mismatched_loss_logs_rejected(tiny_model_params):
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match=r"different columns on processes \[1\]"):
        launch(_mismatched_logs_worker, (tiny_model_params,), num_processes=PROCESSES)


def test_loss_calling_submodule_rejected(tiny_model_params):
    with pytest.raises(torch.multiprocessing.ProcessRaisedException,
                       match=r"(?s)bypass DDP's gradient averaging.*shared.num_processes: 1"):
        launch(_submodule_loss_worker, (tiny_model_params,), num_processes=PROCESSES)


# train_distributed: two processes against one


@pytest.fixture(scope="module")
def one_process(tiny_model_params) -> dict:
    return _run(train, tiny_model_params, _params())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, tiny_model_params) -> dict:
    """Run 'plain' and 'gradient_checkpointing' in two processes and return {(name, rank): saved run}."""
    out_dir = tmp_path_factory.mktemp("two_processes")
    runs = {"plain": _params(), "gradient_checkpointing": _params(gradient_checkpointing=True)}

    launch(_two_process_worker, (out_dir, tiny_model_params, runs), num_processes=PROCESSES)

    return {(name, rank): torch.load(out_dir / f"{name}-rank{rank}.pt", weights_only=False)
            for name in runs for rank in range(PROCESSES)}


def _assert_weights_close(actual: dict, expected: dict) -> None:
    for name, weight in expected.items():
        torch.testing.assert_close(actual[name], weight, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def _column(run: dict, key: str) -> list:
    return [row[key] for row in run["result"].history if key in row]


@pytest.mark.parametrize("rank", range(PROCESSES))
def test_two_processes_joined(two_processes, rank):
    run = two_processes["plain", rank]

    assert run["num_processes"] == PROCESSES
    assert run["process_index"] == rank


@pytest.mark.parametrize("name", ["plain", "gradient_checkpointing"])
def test_two_processes_weights_match(two_processes, one_process, name):
    _assert_weights_close(two_processes[name, 0]["weights"], one_process["weights"])


@pytest.mark.parametrize("name", ["plain", "gradient_checkpointing"])
def test_two_processes_history_matches(two_processes, one_process, name):
    run = two_processes[name, 0]

    assert _column(run, "step") == _column(one_process, "step")
    assert _column(run, "lr") == _column(one_process, "lr")
    for key in ("loss", "grad_norm", "held_out_ce"):
        torch.testing.assert_close(_column(run, key), _column(one_process, key), atol=ATOL, rtol=RTOL,
                                   msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("name, expected", [("plain", {False}), ("gradient_checkpointing", {True})])
def test_gradient_checkpointing_in_two_processes(two_processes, name, expected):
    for rank in range(PROCESSES):
        assert two_processes[name, rank]["checkpointing_in_training"] == expected, rank
        assert not two_processes[name, rank]["checkpointing_after"], rank


def test_processes_end_with_same_weights(two_processes):
    for name, weight in two_processes["plain", 0]["weights"].items():
        assert torch.equal(two_processes["plain", 1]["weights"][name], weight), name


def test_processes_return_same_history(two_processes):
    assert two_processes["plain", 1]["result"].history == two_processes["plain", 0]["result"].history


@pytest.mark.parametrize("rank", range(PROCESSES))
def test_two_processes_count_all_tokens(two_processes, one_process, rank):
    run, expected = two_processes["plain", rank]["result"], one_process["result"]

    assert run.tokens == expected.tokens == 6 * 2 * BATCH_SIZE * SEQ_LEN
    assert run.flops == expected.flops
    assert _column(two_processes["plain", rank], "tokens") == _column(one_process, "tokens")
    assert _column(two_processes["plain", rank], "flops") == _column(one_process, "flops")


def test_evaluation_on_rank_zero_only(two_processes):
    assert two_processes["plain", 0]["evaluate_calls"] == [(0, "Gemma2ForCausalLM")] * 4
    assert two_processes["plain", 1]["evaluate_calls"] == []


@pytest.mark.parametrize("rank", range(PROCESSES))
def test_stop_rule_on_rank_zero_only(two_processes, rank):
    run = two_processes["plain", rank]

    assert run["stop_calls"] == ([0, 0, 0] if rank == 0 else [])
    assert run["result"].steps == 6
    assert run["result"].stopped_early


def test_tolerance_detects_half_batches(tiny_model_params, one_process):
    # Both processes training on the same 2 rows of each micro-batch is the same as one process on them
    half = _run(train, tiny_model_params, _params(), train_batches=ShardedBatches(_train_batches(), 0, 2))

    with pytest.raises(AssertionError):
        _assert_weights_close(half["weights"], one_process["weights"])


# run_training: the entry point of the training notebooks


def _run_distillation(train_fn, model_params, **kwargs) -> dict:
    """Distill a tiny Gemma2 teacher into a differently initialised student, and return the student's weights."""
    teacher = build_model(model_params, VOCAB, seed=1)
    student = build_model(model_params, VOCAB, seed=0)
    train_fn(student, make_distill_loss(teacher), _train_batches(), _params(steps=4, eval_every=0), FLOPS_PER_TOKEN,
             **kwargs)
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


def _run_rmu(train_fn, model_params, **kwargs) -> dict:
    """Unlearn with RMU (one trained down_proj, a retain term) and return the weights."""
    model = build_model(model_params, VOCAB, seed=0)
    # A forward pass first, as a notebook's evaluation makes: transformers then hooks the layers to
    # capture hidden states, and run_training must pickle the hooked model
    model(input_ids=torch.zeros(1, 4, dtype=torch.long), output_hidden_states=True)
    loss_fn = make_loss("RMU", model, RMUParams(layers=(0,), hidden_layer=1, retain_weight=1.0), seed=4)
    pairs = paired_batches(_packed(sequences=32, seed=5), _packed(sequences=32, seed=6), BATCH_SIZE, seed=2)
    train_fn(model, loss_fn, pairs, _params(steps=4, eval_every=0), FLOPS_PER_TOKEN, **kwargs)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class SliceMeanLoss:
    """One process's stand-in for what N processes compute: ``loss_fn`` on each slice, averaged.

    DDP averages the per-process gradients, which is the gradient of this average. For a loss that
    is not a mean over tokens (RepNoise's log of a mean CE, its MMD) this, not the whole-batch loss,
    is what two processes must match.
    """

    def __init__(self, loss_fn, processes: int):
        self.loss_fn, self.processes = loss_fn, processes

    def __call__(self, model, batch):
        results = [self.loss_fn(model, shard_batch(batch, rank, self.processes)) for rank in range(self.processes)]
        loss = sum(loss for loss, _ in results) / self.processes
        logs = {key: sum(logs[key] for _, logs in results) / self.processes for key in results[0][1]}
        return loss, logs


def _run_repnoise(train_fn, model_params, slices: int = 1, **kwargs) -> dict:
    """Unlearn with MaxEnt + RepNoise (logit lens and MMD) and return the weights.

    With ``slices`` > 1 the loss is the mean of the loss on each slice (``SliceMeanLoss``).
    """
    model = build_model(model_params, VOCAB, seed=0)
    loss_fn = make_loss("MaxEnt", model, MaxEntParams(repnoise_alpha=1.0, repnoise_beta=1.0), seed=4)
    loss_fn = SliceMeanLoss(loss_fn, slices) if slices > 1 else loss_fn
    pairs = paired_batches(_packed(sequences=32, seed=5), _packed(sequences=32, seed=6), BATCH_SIZE, seed=2)
    train_fn(model, loss_fn, pairs, _params(steps=4, eval_every=0), FLOPS_PER_TOKEN, **kwargs)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("distributed", DISTRIBUTED)
def test_run_training_repnoise_two_processes(tiny_model_params, distributed):
    # The logit lens uses the final norm and the LM head outside the wrapper's forward pass; their
    # gradients must still be averaged. The noise seed derives from each slice's tokens, so the
    # one-process reference draws the same noise for each slice.
    expected = _run_repnoise(train, tiny_model_params, slices=PROCESSES)

    actual = _run_repnoise(run_training, tiny_model_params, num_processes=PROCESSES, distributed=distributed)

    _assert_weights_close(actual, expected)


def test_repnoise_slices_differ_from_whole_batch(tiny_model_params):
    # Precondition of the test above: the slice mean is not the whole-batch loss
    whole = _run_repnoise(train, tiny_model_params)
    sliced = _run_repnoise(train, tiny_model_params, slices=PROCESSES)

    assert not torch.allclose(whole["model.embed_tokens.weight"], sliced["model.embed_tokens.weight"], atol=1e-4)


def _nan_loss(model, batch):
    loss, logs = lm_loss(model, batch)
    return loss * float("nan"), logs


@pytest.fixture(scope="module", params=DISTRIBUTED)
def run_training_two_processes(request, tiny_model_params) -> dict:
    return _run(run_training, tiny_model_params, _params(), num_processes=PROCESSES, distributed=request.param)


def test_run_training_one_process_is_train(tiny_model_params, one_process):
    run = _run(run_training, tiny_model_params, _params(), num_processes=1)

    assert run["result"].history == one_process["result"].history
    for name, weight in one_process["weights"].items():
        assert torch.equal(run["weights"][name], weight), name


def test_run_training_parent_holds_weights(run_training_two_processes, one_process):
    # _run reads the weights of the model it passed in, so they are the ones loaded back from process 0
    _assert_weights_close(run_training_two_processes["weights"], one_process["weights"])


def test_run_training_two_processes_history(run_training_two_processes, one_process):
    run = run_training_two_processes

    assert _column(run, "step") == _column(one_process, "step")
    assert _column(run, "tokens") == _column(one_process, "tokens")
    assert run["result"].steps == one_process["result"].steps
    assert run["result"].stopped_early
    for key in ("loss", "grad_norm", "held_out_ce"):
        torch.testing.assert_close(_column(run, key), _column(one_process, key), atol=ATOL, rtol=RTOL,
                                   msg=lambda m: f"{key}: {m}")


def test_run_training_records_process_peak_memory(run_training_two_processes, one_process):
    peak = run_training_two_processes["result"].process_peak_memory_bytes

    assert one_process["result"].process_peak_memory_bytes is None
    assert peak > 50 * 2**20  # a process that imported torch and trained uses more than 50 MiB
    assert timing_record(run_training_two_processes["result"])["peak_memory_bytes"] >= peak


def test_run_training_parent_model_state(run_training_two_processes):
    assert not run_training_two_processes["checkpointing_after"]
    assert run_training_two_processes["evaluate_calls"] == []  # the evaluator ran in process 0's copy


@pytest.mark.parametrize("distributed", DISTRIBUTED)
def test_run_training_distillation_two_processes(tiny_model_params, distributed):
    expected = _run_distillation(train, tiny_model_params)

    actual = _run_distillation(run_training, tiny_model_params, num_processes=PROCESSES, distributed=distributed)

    _assert_weights_close(actual, expected)


@pytest.mark.parametrize("distributed", DISTRIBUTED)
def test_run_training_rmu_two_processes(tiny_model_params, distributed):
    expected = _run_rmu(train, tiny_model_params)

    actual = _run_rmu(run_training, tiny_model_params, num_processes=PROCESSES, distributed=distributed)

    _assert_weights_close(actual, expected)


def test_run_training_divergence_reaches_parent(tiny_model_params):
    model = build_model(tiny_model_params, VOCAB, seed=0)

    with pytest.raises(DivergenceError) as excinfo:
        run_training(model, _nan_loss, _train_batches(), _params(steps=2), FLOPS_PER_TOKEN, num_processes=PROCESSES)

    assert excinfo.value.step == 1
    assert excinfo.value.lr == pytest.approx(5e-3)  # first step of the 2-step warmup to 1e-2


def _failing_loss(model, batch):
    raise ValueError("this loss always fails")


def test_run_training_reports_process_error(tiny_model_params):
    model = build_model(tiny_model_params, VOCAB, seed=0)

    with pytest.raises(RuntimeError, match=r"(?s)training processes failed.*Process 0:.*"
                                           r"ValueError: this loss always fails"):
        run_training(model, _failing_loss, _train_batches(), _params(steps=2), FLOPS_PER_TOKEN, num_processes=PROCESSES)


def _fails_on_rank_one(model, batch):
    if torch.distributed.get_rank() == 1:
        raise KeyError("only process 1 fails")
    return lm_loss(model, batch)


def test_run_training_reports_every_process_error(tiny_model_params):
    model = build_model(tiny_model_params, VOCAB, seed=0)

    with pytest.raises(RuntimeError, match=r"(?s)Process 1:.*KeyError: 'only process 1 fails'"):
        run_training(model, _fails_on_rank_one, _train_batches(), _params(steps=2), FLOPS_PER_TOKEN,
                     num_processes=PROCESSES)


class NaNMetric:
    """Evaluator whose metrics are a NaN float, a numpy float and a one-element tensor."""

    def __call__(self, model) -> dict:
        return {"nan": float("nan"), "numpy": np.float32(0.5), "tensor": torch.tensor(0.25)}


def test_run_training_history_values_survive(tiny_model_params):
    model = build_model(tiny_model_params, VOCAB, seed=0)

    result = run_training(model, lm_loss, _train_batches(), _params(steps=2, eval_every=1), FLOPS_PER_TOKEN,
                          evaluate=NaNMetric(), num_processes=PROCESSES)

    row = result.history[-1]
    assert math.isnan(row["nan"])
    assert row["numpy"] == 0.5
    assert row["tensor"] == 0.25


def test_stop_terminates_launcher():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    _stop(child)

    assert child.returncode is not None


def test_launcher_stops_when_caller_dies(tmp_path):
    # The caller starts a sleeping child as run_training starts the launcher, then is killed
    script = ("import subprocess, sys, time\n"
              "from undo_lib.distributed import _stop_with_parent\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
              "preexec_fn=_stop_with_parent)\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    caller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child_pid = int(caller.stdout.readline())

    caller.kill()
    caller.wait()

    assert _exits_within(child_pid, seconds=10)


def _exits_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` is gone or a zombie within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_run_training_rejects_unpicklable_arguments(tiny_model_params):
    model = build_model(tiny_model_params, VOCAB, seed=0)
    generator = (batch for batch in _train_batches())

    with pytest.raises(TypeError, match=r"cannot be pickled.*generator.*shared.num_processes: 1"):
        run_training(model, lm_loss, generator, _params(steps=2), FLOPS_PER_TOKEN, num_processes=PROCESSES)


@pytest.mark.parametrize("params, device, message", [
    (_params(), "meta", r"the model is on \['meta'\].*shared.device: cpu"),
    (_params(batch_size=5), "cpu", "batch_size=5 is not a multiple of the 2 processes"),
    (_params(checkpoint_every=2), "cpu", "checkpoint_every=2 is not supported with 2 processes"),
], ids=["device", "uneven batch", "checkpoints"])
def test_run_training_rejects_before_launch(tiny_model_params, tmp_path, params, device, message):
    model = build_model(tiny_model_params, VOCAB, seed=0).to(device)

    with pytest.raises(ValueError, match=message):
        run_training(model, lm_loss, _train_batches(), params, FLOPS_PER_TOKEN, checkpoint_dir=tmp_path,
                     num_processes=PROCESSES)


def test_run_training_rejects_zero_processes(tiny_model_params):
    model = build_model(tiny_model_params, VOCAB, seed=0)

    with pytest.raises(ValueError, match="num_processes must be >= 1, got 0"):
        run_training(model, lm_loss, _train_batches(), _params(), FLOPS_PER_TOKEN, num_processes=0)
