"""Tests for benchmarks.mfu on CPU at a tiny size: the FLOP counts, the MFU arithmetic and the page.

The MFU values of a CPU run mean nothing; the tests check that they follow from the measured time.
"""

import pytest
import yaml

from benchmarks.mfu import MFUResult, attention_flops_per_token, main, parse_args
from benchmarks.train_step import Workload
from undo_lib.config import ModelParams, TrainParams
from undo_lib.model import build_model, count_parameters

TINY_MODEL = ModelParams(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=16, intermediate_size=64, query_pre_attn_scalar=16, sliding_window=16,
                         max_position_embeddings=16)


@pytest.fixture
def tiny_params_file(tmp_path, smoke_params_dict):
    """The smoke params, written to a file."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(smoke_params_dict, sort_keys=False), encoding="utf-8")
    return path


def test_attention_flops_hand_count():
    train = TrainParams(steps=1, batch_size=2)
    workload = Workload(setting="language", model=TINY_MODEL, vocab_size=320, seq_len=16, batch_size=2, train=train)

    # 12 x layers 2 x (heads 2 x head_dim 16) x seq_len 16
    assert attention_flops_per_token(workload) == 12 * 2 * 32 * 16


def test_mfu_from_rates():
    result = MFUResult(setting="language", n_params=1000, tokens_per_step=500, seconds_per_step=0.25,
                       flops_per_token=6000.0, attention_flops_per_token=2000.0, peak_flops=1e7)

    assert result.tokens_per_second == 2000.0
    assert result.mfu == pytest.approx(2000.0 * 6000.0 / 1e7)  # 1.2
    assert result.mfu_with_attention == pytest.approx(2000.0 * 8000.0 / 1e7)  # 1.6


def test_cpu_run_writes_page(tiny_params_file, smoke_params_dict, tmp_path):
    out = tmp_path / "mfu.md"

    [result] = main(["--params", str(tiny_params_file), "--setting", "arithmetic", "--device", "cpu",
                     "--precision", "fp32", "--peak-tflops", "0.5", "--steps", "2", "--warmup", "1",
                     "--out", str(out)])

    model = build_model(ModelParams(**smoke_params_dict["model"]["arithmetic"]),
                        smoke_params_dict["tokenizer"]["arithmetic"]["vocab_size"], seed=0)
    assert result.n_params == count_parameters(model)
    assert result.flops_per_token == 6.0 * result.n_params
    assert result.peak_flops == 0.5e12
    assert result.seconds_per_step > 0
    page = out.read_text(encoding="utf-8")
    assert f"| arithmetic | {result.n_params:,} |" in page
    assert f"{result.mfu:.1%}" in page
    assert "Peak: 0.5 TFLOP/s" in page
    assert page.rstrip().endswith("| n/a |")  # no verdict for a CPU run


@pytest.mark.parametrize("argv, message", [
    ([], "--peak-tflops"),
    (["--peak-tflops", "0"], "invalid value 0.0: use a number > 0"),
    (["--peak-tflops", "x"], "invalid number: 'x'"),
])
def test_bad_arguments_rejected(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)

    assert message in capsys.readouterr().err
