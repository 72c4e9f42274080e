"""Tests for resumable training: a run interrupted and resumed from its checkpoint matches an
uninterrupted one bitwise (history, counters and weights), and bad checkpoints are rejected.

Interruptions are simulated in-process by raising from the loss function or from a save; the
SIGKILL of a real stage process is tested in tests/test_interruption.py.
"""

import io
import json
import logging
import pickle

import pytest
import torch

from undo_lib import checkpoint
from undo_lib.config import MaxEntParams, TrainParams
from undo_lib.data import PackedData, batches, paired_batches
from undo_lib.evaluate import text_ce
from undo_lib.io import IntegrityError
from undo_lib.losses import lm_loss
from undo_lib.methods.maxent import maxent_loss
from undo_lib.model import build_model
from undo_lib.train import train

SEQ_LEN = 16
KEY = "seed=0 data=v1"


class Interrupted(Exception):
    """Stands in for a kill: raised in the middle of training."""


def _packed(vocab: int, sequences: int = 24, seed: int = 0) -> PackedData:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (sequences, SEQ_LEN), generator=gen)
    return PackedData(ids, torch.ones_like(ids, dtype=torch.bool))


def _params(**overrides) -> TrainParams:
    values = {"steps": 6, "batch_size": 4, "grad_accum": 2, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 2,
              "weight_decay": 0.1, "eval_every": 2, "checkpoint_every": 1}
    values.update(overrides)
    return TrainParams(**values)


def _interrupt_at_call(number: int, loss_fn=lm_loss):
    """Return ``loss_fn`` wrapped to raise Interrupted on its ``number``-th call (1-based)."""
    calls = []

    def wrapped(model, batch):
        calls.append(1)
        if len(calls) == number:
            raise Interrupted(f"interrupted at loss call {number}")
        return loss_fn(model, batch)

    return wrapped


class SeenCountStop:
    """Stop rule with state: stops at its ``limit``-th check, so a resume must replay earlier checks."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen = []

    def __call__(self, metrics: dict) -> bool:
        self.seen.append(metrics)
        return len(self.seen) >= self.limit


def _run(model_params, vocab, params, checkpoint_dir=None, loss_fn=lm_loss, should_stop=None, key=KEY):
    """One training run from the same init and data, as a stage notebook starts it."""
    model = build_model(model_params, vocab, seed=0)
    data = _packed(vocab)
    held_out = _packed(vocab, sequences=4, seed=1)
    result = train(model, loss_fn, batches(data, params.batch_size, seed=3), params, flops_per_token=2.0,
                   evaluate=lambda m: {"ce": text_ce(m, held_out, batch_size=4)}, should_stop=should_stop,
                   checkpoint_dir=checkpoint_dir, checkpoint_key=key)
    return result, model


def _assert_same_run(actual, expected):
    (result, model), (expected_result, expected_model) = actual, expected
    assert result.history == expected_result.history, "history differs from the uninterrupted run"
    assert (result.steps, result.tokens, result.flops, result.stopped_early) == \
        (expected_result.steps, expected_result.tokens, expected_result.flops, expected_result.stopped_early)
    for (name, p), q in zip(model.named_parameters(), expected_model.parameters()):
        assert torch.equal(p, q), f"{name} differs from the uninterrupted run"


# ----------------------------------------------------------------------------------------------
# Resume gives the uninterrupted result


@pytest.mark.parametrize("interrupted_call", [1, 2, 5, 8, 11], ids=lambda n: f"call-{n}")
def test_resume_matches_uninterrupted(tiny_model_params, tokenizer, tmp_path, interrupted_call):
    vocab, params = len(tokenizer), _params()
    expected = _run(tiny_model_params, vocab, params)

    with pytest.raises(Interrupted):
        _run(tiny_model_params, vocab, params, tmp_path / "ckpt", loss_fn=_interrupt_at_call(interrupted_call))
    resumed = _run(tiny_model_params, vocab, params, tmp_path / "ckpt")

    _assert_same_run(resumed, expected)
    completed_steps = (interrupted_call - 1) // params.grad_accum
    assert resumed[0].resumed_from_step == (completed_steps or None)


def test_resume_twice_matches(tiny_model_params, tokenizer, tmp_path):
    vocab, params = len(tokenizer), _params()
    expected = _run(tiny_model_params, vocab, params)

    for call in (3, 5):  # step 2 of the first run, then step 4 of the resumed run (it starts at step 2)
        with pytest.raises(Interrupted):
            _run(tiny_model_params, vocab, params, tmp_path / "ckpt", loss_fn=_interrupt_at_call(call))
    resumed = _run(tiny_model_params, vocab, params, tmp_path / "ckpt")

    _assert_same_run(resumed, expected)
    assert resumed[0].resumed_from_step == 3


def test_resume_paired_batches(tiny_model_params, tokenizer, tmp_path):
    vocab = len(tokenizer)
    params = _params(steps=4, grad_accum=1, eval_every=0)

    def maxent(model, batch):
        return maxent_loss(model, batch, MaxEntParams(retain_weight=0.5))

    def run(loss_fn, checkpoint_dir):
        model = build_model(tiny_model_params, vocab, seed=0)
        pairs = paired_batches(_packed(vocab, seed=5), _packed(vocab, seed=6), params.batch_size, seed=11)
        return train(model, loss_fn, pairs, params, flops_per_token=1.0, checkpoint_dir=checkpoint_dir), model

    expected = run(maxent, None)
    with pytest.raises(Interrupted):
        run(_interrupt_at_call(3, maxent), tmp_path / "ckpt")
    resumed = run(maxent, tmp_path / "ckpt")

    _assert_same_run(resumed, expected)
    assert resumed[0].history[-1]["forget_kl_uniform"] == expected[0].history[-1]["forget_kl_uniform"]


def test_resume_replays_stop_rule(tiny_model_params, tokenizer, tmp_path):
    vocab, params = len(tokenizer), _params(steps=8, grad_accum=1, eval_every=1)
    expected = _run(tiny_model_params, vocab, params, should_stop=SeenCountStop(3))

    with pytest.raises(Interrupted):
        _run(tiny_model_params, vocab, params, tmp_path / "ckpt", loss_fn=_interrupt_at_call(3),
             should_stop=SeenCountStop(3))
    resumed = _run(tiny_model_params, vocab, params, tmp_path / "ckpt", should_stop=SeenCountStop(3))

    assert expected[0].steps == 3, "precondition: the rule stops at step 3"
    assert expected[0].stopped_early
    _assert_same_run(resumed, expected)


def test_interrupted_checkpoint_write_keeps_previous(tiny_model_params, tokenizer, tmp_path, monkeypatch):
    vocab, params = len(tokenizer), _params()
    expected = _run(tiny_model_params, vocab, params)
    real_save = torch.save
    saves = []

    def save_then_fail(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 3:  # the checkpoint of step 3
            raise Interrupted("interrupted while writing a checkpoint")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(Interrupted):
        _run(tiny_model_params, vocab, params, tmp_path / "ckpt")
    monkeypatch.setattr(torch, "save", real_save)

    state = json.loads((tmp_path / "ckpt" / checkpoint.STATE_FILE).read_text())
    assert state["step"] == 2, "the failed write must leave the checkpoint of step 2 in place"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "the failed write left a temporary folder"
    _assert_same_run(_run(tiny_model_params, vocab, params, tmp_path / "ckpt"), expected)


def test_leftover_temporary_removed(tiny_model_params, tokenizer, tmp_path):
    leftover = tmp_path / ".ckpt.tmp-killed"  # what a SIGKILL during a checkpoint write leaves
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")

    _run(tiny_model_params, len(tokenizer), _params(steps=2), tmp_path / "ckpt")

    assert not leftover.exists()
    assert (tmp_path / "ckpt" / checkpoint.STATE_FILE).is_file()


# ----------------------------------------------------------------------------------------------
# When checkpoints are written and resumed


def test_checkpoints_do_not_change_result(tiny_model_params, tokenizer, tmp_path):
    vocab = len(tokenizer)

    without = _run(tiny_model_params, vocab, _params(checkpoint_every=0))
    with_checkpoints = _run(tiny_model_params, vocab, _params(checkpoint_every=1), tmp_path / "ckpt")

    _assert_same_run(with_checkpoints, without)


def test_checkpoint_every_zero_writes_nothing(tiny_model_params, tokenizer, tmp_path):
    _run(tiny_model_params, len(tokenizer), _params(checkpoint_every=0), tmp_path / "ckpt")

    assert not (tmp_path / "ckpt").exists()


def test_checkpoint_cadence_and_end(tiny_model_params, tokenizer, tmp_path, monkeypatch):
    saved_steps = []
    real_save = checkpoint.save_checkpoint

    def record(path, model, optimizer, state):
        saved_steps.append((state["step"], state["finished"]))
        real_save(path, model, optimizer, state)

    monkeypatch.setattr("undo_lib.train.save_checkpoint", record)
    _run(tiny_model_params, len(tokenizer), _params(steps=5, checkpoint_every=2), tmp_path / "ckpt")

    assert saved_steps == [(2, False), (4, False), (5, True)]


def test_finished_checkpoint_skips_training(tiny_model_params, tokenizer, tmp_path):
    vocab, params = len(tokenizer), _params()
    expected = _run(tiny_model_params, vocab, params, tmp_path / "ckpt")

    resumed = _run(tiny_model_params, vocab, params, tmp_path / "ckpt", loss_fn=_interrupt_at_call(1))

    _assert_same_run(resumed, expected)
    assert resumed[0].resumed_from_step == params.steps


@pytest.mark.parametrize("change", ["params", "key"])
def test_changed_config_discards_checkpoint(tiny_model_params, tokenizer, tmp_path, caplog, change):
    vocab = len(tokenizer)
    new_params, new_key = (_params(lr=5e-3), KEY) if change == "params" else (_params(), "seed=1 data=v1")
    expected = _run(tiny_model_params, vocab, new_params, key=new_key)
    with pytest.raises(Interrupted):
        _run(tiny_model_params, vocab, _params(), tmp_path / "ckpt", loss_fn=_interrupt_at_call(5))

    with caplog.at_level(logging.WARNING, logger="undo_lib.checkpoint"):
        restarted = _run(tiny_model_params, vocab, new_params, tmp_path / "ckpt", key=new_key)

    _assert_same_run(restarted, expected)
    assert restarted[0].resumed_from_step is None
    assert "starts from step 0" in caplog.text


def test_fingerprint_ignores_checkpoint_every():
    assert checkpoint.checkpoint_fingerprint(_params(checkpoint_every=1), KEY) == \
        checkpoint.checkpoint_fingerprint(_params(checkpoint_every=50), KEY)
    assert checkpoint.checkpoint_fingerprint(_params(), KEY) != checkpoint.checkpoint_fingerprint(_params(steps=7), KEY)


# ----------------------------------------------------------------------------------------------
# Bad checkpoints


def _interrupted_checkpoint(tiny_model_params, vocab, path):
    with pytest.raises(Interrupted):
        _run(tiny_model_params, vocab, _params(), path, loss_fn=_interrupt_at_call(5))


def test_truncated_weights_rejected(tiny_model_params, tokenizer, tmp_path):
    ckpt = tmp_path / "ckpt"
    _interrupted_checkpoint(tiny_model_params, len(tokenizer), ckpt)
    weights = ckpt / checkpoint.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])

    with pytest.raises(IntegrityError) as excinfo:
        _run(tiny_model_params, len(tokenizer), _params(), ckpt)

    message = str(excinfo.value)
    assert str(weights) in message
    assert "Delete the folder" in message


class _Planted:
    """Pickles into a call of ``open(path, "w")``, which an unsafe unpickler would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_planted_pickle_not_executed(tiny_model_params, tokenizer, tmp_path):
    ckpt = tmp_path / "ckpt"
    _interrupted_checkpoint(tiny_model_params, len(tokenizer), ckpt)
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    pickle.dump({"optimizer": _Planted(marker), "rng": {}}, buffer)
    (ckpt / checkpoint.TRAINER_FILE).write_bytes(buffer.getvalue())

    with pytest.raises(IntegrityError) as excinfo:
        _run(tiny_model_params, len(tokenizer), _params(), ckpt)

    assert not marker.exists(), "loading the checkpoint ran pickled code"
    assert str(ckpt / checkpoint.TRAINER_FILE) in str(excinfo.value)


def test_missing_state_file_rejected(tiny_model_params, tokenizer, tmp_path):
    ckpt = tmp_path / "ckpt"
    _interrupted_checkpoint(tiny_model_params, len(tokenizer), ckpt)
    (ckpt / checkpoint.STATE_FILE).unlink()

    with pytest.raises(IntegrityError, match="state.json"):
        _run(tiny_model_params, len(tokenizer), _params(), ckpt)


def test_remove_checkpoint_and_temporaries(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / ".ckpt.tmp-abc").mkdir()
    (tmp_path / ".ckpt.old-123").mkdir()

    checkpoint.remove_checkpoint(tmp_path / "ckpt")
    checkpoint.remove_checkpoint(None)

    assert list(tmp_path.iterdir()) == []
