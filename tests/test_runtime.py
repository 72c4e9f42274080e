"""Tests for undo_lib.runtime: input checks before compute, the memory check, fingerprints and outputs."""

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from undo_lib import resources, runtime
from undo_lib.checkpoint import STATE_FILE
from undo_lib.config import params_from_dict
from undo_lib.io import read_json
from undo_lib.runtime import producing_stage
from undo_lib.resources import InsufficientMemoryError

ROOT = Path(__file__).resolve().parents[1]


def _resolve(value, params: dict):
    """A matrix axis: a literal list, or a ${dotted.key} reference into params.yaml."""
    if not isinstance(value, str):
        return value
    node = params
    for key in value.strip("${}").split("."):
        node = node[key]
    return node


def _dvc_stage_names() -> set[str]:
    """Stage names as `dvc stage list` shows them, expanded from dvc.yaml and params.yaml."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    names = set()
    for name, body in stages.items():
        if "matrix" not in body:
            names.add(name)
            continue
        combos = [[]]
        for axis in body["matrix"].values():
            combos = [combo + [str(value)] for combo in combos for value in _resolve(axis, params)]
        names |= {f"{name}@{'-'.join(combo)}" for combo in combos}
    return names


# ----------------------------------------------------------------------------------------------
# require_inputs


def test_missing_data_file_rejected(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "manifest.json").write_text("{}")

    with pytest.raises(FileNotFoundError) as excinfo:
        runtime.require_inputs(runtime.data_inputs(data_dir, "arithmetic", ["pretrain_full.jsonl"]))

    message = str(excinfo.value)
    assert str(data_dir / "pretrain_full.jsonl") in message
    assert "run `dvc repro arithmetic-data`" in message


def test_missing_model_folder_rejected(tmp_path):
    model_dir = tmp_path / "models" / "undo_0.3"

    with pytest.raises(FileNotFoundError) as excinfo:
        runtime.require_inputs(runtime.model_inputs(model_dir, "arithmetic", "undo_0.3", 0))

    message = str(excinfo.value)
    assert str(model_dir / "model.safetensors") in message
    assert "run `dvc repro arithmetic-undo@0-0.3`" in message


def test_missing_inputs_all_named(tmp_path):
    inputs = {tmp_path / "a.json": "arithmetic-unlearn@MaxEnt", tmp_path / "b.json": "arithmetic-pretrain@oracle"}

    with pytest.raises(FileNotFoundError) as excinfo:
        runtime.require_inputs(inputs)

    lines = str(excinfo.value).splitlines()
    assert len(lines) == 2
    assert str(tmp_path / "b.json") in lines[1]
    assert "arithmetic-pretrain@oracle" in lines[1]


def test_present_inputs_accepted(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")

    runtime.require_inputs(runtime.model_inputs(tmp_path, "arithmetic", "full", 0))


def _model_names() -> list[str]:
    """Every model name of the arithmetic pipeline under the committed params.yaml."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    unlearn, alphas = params["unlearn"]["arithmetic"], params["distill"]["arithmetic"]["alphas"]
    sweeps = [f"{run}_lr_{float(lr)}" for run in ("GradDiff", "MaxEnt", "RMU", "SAM", "RepNoise")
              for lr in unlearn[run]["lrs"]]
    return ["init", "full", "oracle", *sweeps, "teacher_MaxEnt", "distilled_RMU", "match_full", "match_random_init",
            *(f"undo_{float(alpha)}" for alpha in alphas)]


@pytest.mark.parametrize("model_name", _model_names())
def test_producing_stage_exists_in_dvc_yaml(model_name):
    assert producing_stage("arithmetic", model_name, 0) in _dvc_stage_names()


def test_producing_stage_unknown_model():
    with pytest.raises(ValueError, match="'fulll'"):
        producing_stage("arithmetic", "fulll", 0)


def test_start_stage_rejects_unlisted_seed(tmp_path, smoke_params_dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(smoke_params_dict), encoding="utf-8")

    with pytest.raises(ValueError, match=r"seed 7 is not in shared.seeds \[0\]"):
        runtime.start_stage(str(path), "arithmetic", "pretrain", "full", seed=7)


def test_stage_seed_depends_on_training_seed(tmp_path, smoke_params_dict):
    smoke_params_dict["shared"]["seeds"] = [0, 1]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(smoke_params_dict), encoding="utf-8")

    seeds = {seed: runtime.start_stage(str(path), "arithmetic", "pretrain", "full", seed=seed)[2] for seed in (0, 1)}

    assert seeds[0] != seeds[1]


# ----------------------------------------------------------------------------------------------
# Memory check


def test_huge_batch_fails_fast(smoke_params_dict):
    smoke_params_dict["pretrain"]["arithmetic"]["batch_size"] = 10**9
    params = params_from_dict(smoke_params_dict)

    start = time.perf_counter()
    with pytest.raises(InsufficientMemoryError) as excinfo:
        runtime.check_training_memory(params, "arithmetic", "pretrain.arithmetic", params.pretrain["arithmetic"],
                                      vocab_size=320, device=torch.device("cpu"))
    elapsed = time.perf_counter() - start

    message = str(excinfo.value)
    assert elapsed < 1.0, f"the check took {elapsed:.2f} s; it must not allocate the batch"
    assert "GiB" in message
    assert "is free" in message
    assert "pretrain.arithmetic.batch_size" in message
    assert "pretrain.arithmetic.grad_accum" in message


def test_memory_check_switch(smoke_params_dict):
    smoke_params_dict["pretrain"]["arithmetic"]["batch_size"] = 10**9
    smoke_params_dict["shared"]["check_memory"] = False
    params = params_from_dict(smoke_params_dict)

    runtime.check_training_memory(params, "arithmetic", "pretrain.arithmetic", params.pretrain["arithmetic"],
                                  vocab_size=320, device=torch.device("cpu"))


def test_smoke_settings_fit(smoke_params_dict):
    params = params_from_dict(smoke_params_dict)

    runtime.check_training_memory(params, "arithmetic", "distill.arithmetic.train", params.distill["arithmetic"].train,
                                  vocab_size=320, device=torch.device("cpu"), with_teacher=True)


def test_gpu_memory_read_from_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * resources.GIB, 80 * resources.GIB))
    estimate = resources.MemoryEstimate(model_and_optimizer=2 * resources.GIB, activations=2 * resources.GIB)

    assert resources.available_memory(torch.device("cuda")) == 3 * resources.GIB
    with pytest.raises(InsufficientMemoryError, match="3.00 GiB is free"):
        resources.check_memory(estimate, torch.device("cuda"), "pretrain.arithmetic")


def test_parameter_count_matches_model(tiny_model, tiny_model_params, tokenizer):
    from undo_lib.model import count_parameters

    assert resources.parameter_count(tiny_model_params, len(tokenizer)) == count_parameters(tiny_model)


def test_estimate_terms(tiny_model_params):
    single = resources.estimate_training_memory(tiny_model_params, 320, sequences=8, seq_len=64)
    double = resources.estimate_training_memory(tiny_model_params, 320, sequences=16, seq_len=64)
    with_teacher = resources.estimate_training_memory(tiny_model_params, 320, sequences=8, seq_len=64,
                                                      teacher=tiny_model_params)

    assert double.activations == 2 * single.activations
    assert double.model_and_optimizer == single.model_and_optimizer == 16 * resources.parameter_count(tiny_model_params, 320)
    assert single.teacher == 0
    assert with_teacher.teacher > 4 * resources.parameter_count(tiny_model_params, 320)
    assert with_teacher.total == single.total + with_teacher.teacher


def test_estimate_bf16_and_checkpointing_by_hand(tiny_model_params):
    """Hand-computed for H=32, L=2, A=2, I=64, V=320, 8 sequences of 64 tokens (512 tokens), N=28,960."""
    estimates = {
        (precision, checkpointing): resources.estimate_training_memory(
            tiny_model_params, 320, sequences=8, seq_len=64, precision=precision,
            gradient_checkpointing=checkpointing)
        for precision in ("fp32", "bf16") for checkpointing in (False, True)
    }

    # per layer 32·32 + 4·64 + 4·2·64 = 1,792 values a token; logits 4·320 = 1,280
    assert estimates["fp32", False].activations == 512 * (2 * 1792 + 1280) * 4
    assert estimates["bf16", False].activations == 512 * (2 * 1792 + 1280) * 2
    # checkpointing: the 2 layer inputs of 32 values plus one recomputed layer
    assert estimates["fp32", True].activations == 512 * (2 * 32 + 1792 + 1280) * 4
    assert estimates["bf16", True].activations == 512 * (2 * 32 + 1792 + 1280) * 2
    assert estimates["fp32", False].model_and_optimizer == 16 * 28960
    assert estimates["fp32", True].model_and_optimizer == 16 * 28960
    assert estimates["bf16", False].model_and_optimizer == 18 * 28960  # + bfloat16 weight copies


def test_memory_check_passes_precision(smoke_params_dict, monkeypatch):
    smoke_params_dict["pretrain"]["arithmetic"]["precision"] = "bf16"
    smoke_params_dict["pretrain"]["arithmetic"]["gradient_checkpointing"] = True
    params = params_from_dict(smoke_params_dict)
    received = {}
    monkeypatch.setattr(runtime, "check_memory", lambda estimate, device, key: received.update(estimate=estimate))

    runtime.check_training_memory(params, "arithmetic", "pretrain.arithmetic", params.pretrain["arithmetic"],
                                  vocab_size=320, device=torch.device("cpu"))

    expected = resources.estimate_training_memory(
        params.model["arithmetic"], 320, params.pretrain["arithmetic"].batch_size, params.data["arithmetic"].seq_len,
        precision="bf16", gradient_checkpointing=True)
    assert received["estimate"] == expected


# ----------------------------------------------------------------------------------------------
# Fingerprints and stage outputs


def test_run_fingerprint_covers_parts_and_files(tmp_path, smoke_params_dict):
    params = params_from_dict(smoke_params_dict)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights v1")

    base = runtime.run_fingerprint("full", 7, params.pretrain["arithmetic"], files=[weights])
    same = runtime.run_fingerprint("full", 7, params.pretrain["arithmetic"], files=[weights])
    other_seed = runtime.run_fingerprint("full", 8, params.pretrain["arithmetic"], files=[weights])
    weights.write_bytes(b"weights v2")
    other_file = runtime.run_fingerprint("full", 7, params.pretrain["arithmetic"], files=[weights])

    assert base == same
    assert len({base, other_seed, other_file}) == 3


def test_finish_stage_outputs(tmp_path, tiny_model, tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tmp_path / "checkpoints" / "pretrain-full"
    ckpt.mkdir(parents=True)
    (ckpt / STATE_FILE).write_text("{}")

    runtime.finish_stage(tmp_path / "out", {"final": {"retain": 0.5}}, history=[{"step": 0}], model=tiny_model,
                         tokenizer=tokenizer, model_dir=tmp_path / "model", timing={"seconds": 1.5},
                         timing_path=tmp_path / "timing" / "pretrain-full.json", checkpoint_dir=ckpt)

    assert read_json(tmp_path / "out" / "metrics.json") == {"final": {"retain": 0.5}}
    assert "seconds" not in (tmp_path / "out" / "metrics.json").read_text()
    assert json.loads((tmp_path / "timing" / "pretrain-full.json").read_text()) == {"seconds": 1.5}
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not ckpt.exists(), "the checkpoint must be deleted once the outputs are written"


def test_finish_stage_timing_needs_path(tmp_path):
    with pytest.raises(ValueError, match="timing_path"):
        runtime.finish_stage(tmp_path, {}, timing={"seconds": 1.0})
