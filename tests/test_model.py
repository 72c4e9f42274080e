"""Tests for undo_lib.model: building, counting, saving and loading tiny Gemma2 models."""

import pickle

import pytest
import torch
from transformers import Gemma2ForCausalLM

from undo_lib.io import IntegrityError
from undo_lib.model import build_model, copy_model, count_parameters, load_model, resolve_device, save_model
from undo_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID


def _sample_ids(vocab: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (2, 12), generator=gen)


def test_build_model_shape(tiny_model, tiny_model_params, tokenizer):
    config = tiny_model.config

    assert isinstance(tiny_model, Gemma2ForCausalLM)
    assert config.vocab_size == len(tokenizer)
    assert config.hidden_size == tiny_model_params.hidden_size
    assert config.num_hidden_layers == 2
    assert len(tiny_model.model.layers) == 2
    assert config.num_attention_heads == 2
    assert config.num_key_value_heads == 1
    assert config.head_dim == 16
    assert config.intermediate_size == 64
    assert config.query_pre_attn_scalar == 16
    assert config.max_position_embeddings == 64
    assert tuple(tiny_model.model.embed_tokens.weight.shape) == (len(tokenizer), 32)


def test_build_model_token_ids(tiny_model):
    assert tiny_model.config.pad_token_id == PAD_ID
    assert tiny_model.config.eos_token_id == EOS_ID
    assert tiny_model.config.bos_token_id == BOS_ID


def test_build_model_eager_attention(tiny_model):
    assert tiny_model.config._attn_implementation == "eager"


def test_logits_shape(tiny_model, tokenizer):
    ids = _sample_ids(len(tokenizer))

    with torch.no_grad():
        logits = tiny_model(input_ids=ids).logits

    assert tuple(logits.shape) == (2, 12, len(tokenizer))


def test_same_seed_same_init(tiny_model_params, tokenizer):
    first = build_model(tiny_model_params, len(tokenizer), seed=4)
    second = build_model(tiny_model_params, len(tokenizer), seed=4)
    third = build_model(tiny_model_params, len(tokenizer), seed=5)

    for (name, p), q in zip(first.named_parameters(), second.parameters()):
        assert torch.equal(p, q), f"{name} differs for the same seed"
    assert not torch.equal(first.model.embed_tokens.weight, third.model.embed_tokens.weight)


def test_count_parameters_tied_once(tiny_model, tokenizer):
    vocab, hidden, inter, head_dim = len(tokenizer), 32, 64, 16
    q_heads, kv_heads, layers = 2, 1, 2
    attention = hidden * q_heads * head_dim + 2 * hidden * kv_heads * head_dim + q_heads * head_dim * hidden
    mlp = 3 * hidden * inter
    norms = 4 * hidden  # input, post-attention, pre-feedforward and post-feedforward RMSNorm
    expected = vocab * hidden + layers * (attention + mlp + norms) + hidden  # + final norm

    assert count_parameters(tiny_model) == expected
    assert tiny_model.lm_head.weight is tiny_model.model.embed_tokens.weight


def test_save_load_identical_logits(tiny_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with torch.no_grad():
        for p in tiny_model.parameters():
            if p.ndim == 1:  # RMSNorm gains start at 0, so shift them to make them matter
                p.add_(0.1)
    ids = _sample_ids(len(tokenizer))
    tiny_model.eval()
    with torch.no_grad():
        expected = tiny_model(input_ids=ids).logits

    save_model(tiny_model, tokenizer, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    with torch.no_grad():
        actual = loaded(input_ids=ids).logits

    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    assert torch.equal(actual, expected)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert loaded.config._attn_implementation == "eager"


def test_save_replaces_old_output(tiny_model, tokenizer, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("from an earlier run")

    save_model(tiny_model, tokenizer, target)

    assert not (target / "stale.txt").exists()
    assert (target / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "temporary folders were left behind"


def test_load_rejects_pickle(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a real checkpoint")

    with pytest.raises(FileNotFoundError) as excinfo:
        load_model(tmp_path)

    message = str(excinfo.value)
    assert "safetensors" in message
    assert "pytorch_model.bin" in message
    assert str(tmp_path) in message


class _Planted:
    """Pickles into a call of ``open(path, "w")``, which loading the pickle with torch.load would run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_ignores_planted_pickle(tiny_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_model(tiny_model, tokenizer, tmp_path / "model")
    marker = tmp_path / "code-ran"
    with (tmp_path / "model" / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"model.embed_tokens.weight": _Planted(marker)}, f)

    loaded = load_model(tmp_path / "model")

    assert not marker.exists(), "load_model unpickled pytorch_model.bin"
    assert torch.equal(loaded.model.embed_tokens.weight, tiny_model.model.embed_tokens.weight)


def _corrupt(weights, corruption: str) -> None:
    content = weights.read_bytes()
    if corruption == "truncated-data":
        weights.write_bytes(content[: len(content) // 2])
    elif corruption == "truncated-header":
        weights.write_bytes(content[:20])
    elif corruption == "garbage-header":
        weights.write_bytes(content[:8] + b"{not json" + content[17:])
    else:
        weights.write_bytes(b"")


@pytest.mark.parametrize("corruption", ["truncated-data", "truncated-header", "garbage-header", "empty"])
def test_load_corrupt_safetensors(tiny_model, tokenizer, tmp_path, monkeypatch, corruption):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_model(tiny_model, tokenizer, tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    _corrupt(weights, corruption)

    with pytest.raises(IntegrityError) as excinfo:
        load_model(tmp_path / "model")

    message = str(excinfo.value)
    assert str(weights) in message
    assert "Delete the folder" in message
    assert "rerun the stage" in message


def test_load_corrupt_config(tiny_model, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save_model(tiny_model, tokenizer, tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text('{"model_type": "gemma2",')

    with pytest.raises(IntegrityError, match="Delete the folder"):
        load_model(tmp_path / "model")


def test_resolve_device_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_missing_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    with pytest.raises(RuntimeError, match="cuda"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_copy_model_is_byte_identical(tiny_model, tokenizer, tmp_path):
    save_model(tiny_model, tokenizer, tmp_path / "source")

    copy_model(tmp_path / "source", tmp_path / "copy")

    source = {p.name: p.read_bytes() for p in (tmp_path / "source").iterdir()}
    assert {p.name: p.read_bytes() for p in (tmp_path / "copy").iterdir()} == source


def test_copy_model_without_weights_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()

    with pytest.raises(FileNotFoundError, match="no model.safetensors in .*empty"):
        copy_model(tmp_path / "empty", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_peak_memory_is_recorded():
    from undo_lib.compute import peak_memory_bytes, timing_record

    block = torch.zeros(32 * 2**20 // 4)  # 32 MiB that stay alive while the peak is read
    assert peak_memory_bytes() >= block.numel() * 4
    assert timing_record(None)["peak_memory_bytes"] == peak_memory_bytes()
