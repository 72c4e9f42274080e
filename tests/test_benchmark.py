"""Tests for benchmarks.train_step at a tiny size: timing records, ratios and the generated page.

They check structure only. Timing targets are reported by the benchmark, never asserted here.
"""

import pytest
import torch
import yaml

from benchmarks.train_step import (FORWARD, VARIANTS, Workload, _minimal_runner, _rotated, main, parse_args,
                                   render_page, results_markdown, run_benchmark, time_steps, workload_from_params)
from benchmarks.pipeline_profile import before_after_table, micro_table
from undo_lib.config import ModelParams, TrainParams, load_params
from undo_lib.model import build_model

TINY_MODEL = ModelParams(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=16, intermediate_size=64, query_pre_attn_scalar=16, sliding_window=16,
                         max_position_embeddings=16)
TABLE_HEADER = "| variant | what one step does | median s/step | tokens/s | min–max s/step |"
REPEATS = 2


def _tiny_workload() -> Workload:
    train = TrainParams(steps=1, batch_size=2, lr=1e-3, min_lr=1e-3, weight_decay=0.1, max_grad_norm=1.0)
    return Workload(setting="arithmetic", model=TINY_MODEL, vocab_size=320, seq_len=16, batch_size=2, train=train)


@pytest.fixture(scope="module")
def tiny_result():
    return run_benchmark(_tiny_workload(), steps=2, warmup=1, repeats=REPEATS)


@pytest.fixture
def tiny_params_file(tmp_path, smoke_params_dict):
    """The smoke params with one-layer models, written to a file."""
    for setting in ("arithmetic", "language"):
        smoke_params_dict["model"][setting]["num_hidden_layers"] = 1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(smoke_params_dict, sort_keys=False), encoding="utf-8")
    return path


# Timing records


def test_records_cover_every_variant(tiny_result):
    assert list(tiny_result.timings) == [*VARIANTS, FORWARD]


def test_records_have_positive_times(tiny_result):
    for name, timing in tiny_result.timings.items():
        assert len(timing.seconds_per_step) == REPEATS, f"{name} should have one time per repeat"
        assert all(seconds > 0 for seconds in timing.seconds_per_step), f"{name}: {timing.seconds_per_step}"
        assert timing.tokens_per_second > 0, name


def test_tokens_per_second_uses_median(tiny_result):
    timing = tiny_result.timings["ours"]

    assert timing.tokens_per_step == 2 * 16
    assert timing.tokens_per_second == pytest.approx(32 / timing.median)


def test_ratios_come_from_medians(tiny_result):
    timings = tiny_result.timings

    assert tiny_result.ours_over_minimal == timings["ours"].median / timings["minimal"].median
    assert tiny_result.distill_over_ours == timings["distill"].median / timings["ours"].median
    assert tiny_result.forward_share == timings[FORWARD].median / timings["ours"].median


def test_result_counts_parameters(tiny_result):
    model = build_model(TINY_MODEL, 320, seed=0)

    assert tiny_result.n_params == sum(p.numel() for p in model.parameters())


def test_time_steps_leaves_base_unchanged():
    workload = _tiny_workload()
    base = build_model(workload.model, workload.vocab_size, seed=0)
    before = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    batch = {"input_ids": torch.randint(4, workload.vocab_size, (2, 16))}

    seconds = time_steps(_minimal_runner(workload.train), base, batch, steps=2, warmup=1, seed=0)

    assert seconds > 0
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, before[name]), f"{name} changed: each variant must train a copy"


def test_rotated_order():
    assert _rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert _rotated(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert _rotated(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_run_benchmark_rejects_zero_steps():
    with pytest.raises(ValueError, match="steps=0"):
        run_benchmark(_tiny_workload(), steps=0, warmup=0, repeats=1)


# Workload from a params file


def test_workload_reads_params_file(tiny_params_file):
    params = load_params(tiny_params_file)

    workload = workload_from_params(params, "language")

    assert workload.model == params.model["language"]
    assert workload.vocab_size == params.tokenizer["language"].vocab_size
    assert workload.seq_len == params.data["language"].seq_len
    assert workload.batch_size == params.pretrain["language"].batch_size
    assert workload.train.lr == params.pretrain["language"].lr


def test_workload_lr_is_constant(tiny_params_file):
    workload = workload_from_params(load_params(tiny_params_file), "arithmetic")

    assert workload.train.min_lr == workload.train.lr
    assert workload.train.warmup_steps == 0
    assert workload.train.eval_every == 0
    assert workload.train.checkpoint_every == 0
    assert workload.train.grad_accum == 1


def test_workload_missing_setting_raises(tmp_path, smoke_params_dict):
    smoke_params_dict["shared"]["settings"] = ["arithmetic"]
    for section in ("data", "tokenizer", "model", "pretrain", "unlearn", "distill", "relearn", "evaluate",
                    "figures"):
        del smoke_params_dict[section]["language"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(smoke_params_dict, sort_keys=False), encoding="utf-8")

    with pytest.raises(ValueError, match="data.language"):
        workload_from_params(load_params(path), "language")


# Report and command line


def test_results_markdown_lists_machine_and_command(tiny_result):
    text = results_markdown([tiny_result], command="python -m benchmarks.train_step --steps 2", date="today")

    assert text.startswith("Machine: ")
    assert f"torch {torch.__version__} with {torch.get_num_threads()} intra-op threads" in text
    assert "Command: `python -m benchmarks.train_step --steps 2`" in text
    assert "Date: today" in text
    assert TABLE_HEADER in text
    assert "| ours / minimal |" in text
    assert "| distill / ours |" in text


def test_page_has_sections_and_table(tiny_result):
    page = render_page([tiny_result], command="python -m benchmarks.train_step", date="today")

    assert page.startswith("# Benchmark: seconds per training step")
    assert "## How to run" in page
    assert "## Results" in page
    assert "{results}" not in page, "the Results placeholder should be filled"
    assert "\nMachine: " in page
    assert TABLE_HEADER in page
    assert f"{tiny_result.n_params:,} parameters" in page


def test_main_writes_page(tiny_params_file, tmp_path, capsys):
    out = tmp_path / "docs" / "benchmarks.md"
    argv = ["--params", str(tiny_params_file), "--steps", "2", "--warmup", "1", "--repeats", "1",
            "--threads", "1", "--out", str(out)]

    results = main(argv)

    assert [r.workload.setting for r in results] == ["arithmetic"]
    stdout = capsys.readouterr().out
    assert TABLE_HEADER in stdout
    assert "Machine: " in stdout
    page = out.read_text(encoding="utf-8")
    assert TABLE_HEADER in page
    assert "\nMachine: " in page
    assert f"Command: `python -m benchmarks.train_step --params {tiny_params_file}" in page


def test_threads_default_is_none():
    assert parse_args([]).threads is None, "None means: take shared.torch_threads from the params file"


@pytest.mark.parametrize("option", ["--steps", "--repeats"])
def test_parse_args_rejects_zero(option):
    with pytest.raises(SystemExit):
        parse_args([option, "0"])


def test_parse_args_rejects_unknown_setting():
    with pytest.raises(SystemExit):
        parse_args(["--setting", "chemistry"])


def test_profile_before_after_table():
    table = before_after_table({"pretrain": (2, 10.5), "relearn": (19, 7.8)},
                               {"pretrain": (2, 9.0), "relearn": (4, 4.0)})

    assert "| relearn | 19 | 7.8 | 4 | 4.0 |" in table
    assert table.splitlines()[-1] == "| **total** | 21 | **18.3** | 6 | **13.0** |"


def test_profile_micro_table_speedup():
    table = micro_table([("tokenise", 17.5, 7.0), ("step", 0.0021, 0.0020)])

    assert table.splitlines()[-2] == "| tokenise | 17.500 s | 7.000 s | 2.50× |"
    assert table.splitlines()[-1] == "| step | 2.10 ms | 2.00 ms | 1.05× |"
