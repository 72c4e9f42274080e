"""Tests for loading pretrained causal LMs and tokenizers (undo_lib.pretrained)."""

import shutil
import socket

import pytest
import torch

from undo_lib import pretrained
from undo_lib.pretrained import PretrainedSource, PretrainedSourceError

TEXT = "Aisha has 12 apples and gives 3 of them to Mateo."
UNKNOWN_ID = "undo-test/no-such-model"


@pytest.fixture
def saved(tmp_path, tokenizer, tiny_model_params):
    """A random tiny Gemma2 and the conftest tokenizer written to a folder: (folder, model)."""
    folder = tmp_path / "tiny-gemma2"
    model = pretrained.write_random_gemma2(folder, tokenizer, tiny_model_params, seed=0)
    return folder, model


@pytest.fixture
def no_network(monkeypatch):
    """Make every socket connection or name lookup fail, so a test that reaches for the hub fails."""

    def block_network(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", block_network)
    monkeypatch.setattr(socket, "getaddrinfo", block_network)


@pytest.fixture
def hub_offline(monkeypatch, tmp_path, no_network):
    """Offline mode with an empty hub cache, as on a machine without network access."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE when it is imported, which may have happened already.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def _fake_hub_download(monkeypatch, error: Exception) -> None:
    """Make every file download of transformers raise ``error``."""
    import transformers.utils.hub as transformers_hub

    def download(*args, **kwargs):
        raise error

    monkeypatch.setattr(transformers_hub, "hf_hub_download", download)
    monkeypatch.setattr(transformers_hub, "snapshot_download", download)


def _http_error(error_class, status: int):
    import httpx2

    request = httpx2.Request("GET", f"https://huggingface.co/{UNKNOWN_ID}/resolve/main/config.json")
    return error_class(f"{status} error for {UNKNOWN_ID}", response=httpx2.Response(status, request=request))


# --- PretrainedSource ---------------------------------------------------------------------------

def test_source_defaults_match_paper():
    source = PretrainedSource(pretrained.PAPER_MODEL_ID)
    assert source.dtype == "bfloat16"
    assert source.attn_implementation == "eager"
    assert source.revision is None


def test_source_accepts_path_object(tmp_path):
    assert PretrainedSource(tmp_path).path == str(tmp_path)


@pytest.mark.parametrize("dtype, expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                                             ("float16", torch.float16)])
def test_source_torch_dtype(dtype, expected):
    assert PretrainedSource("google/gemma-2-2b", dtype=dtype).torch_dtype == expected


@pytest.mark.parametrize("field, value, words", [
    ("dtype", "fp32", ["'fp32'", "float32, bfloat16, float16"]),
    ("attn_implementation", "flash", ["'flash'", "eager, sdpa, flash_attention_2"]),
    ("revision", "", ["revision ''", "None"]),
    ("path", " ", ["path ' '", "hub id"]),
])
def test_source_invalid_value(field, value, words):
    arguments = {"path": "google/gemma-2-2b", field: value}
    with pytest.raises(ValueError) as caught:
        PretrainedSource(**arguments)
    for word in words:
        assert word in str(caught.value)


def test_source_flash_attention_float32():
    with pytest.raises(ValueError, match="set dtype to one of bfloat16, float16"):
        PretrainedSource("google/gemma-2-2b", dtype="float32", attn_implementation="flash_attention_2")


@pytest.mark.parametrize("path, expected", [
    ("google/gemma-2-2b", False),
    ("gpt2", False),
    ("/models/gemma-2-2b", True),
    ("./gemma-2-2b", True),
    ("~/models/gemma", True),
    ("outputs/models/gemma", True),
])
def test_is_local_path(path, expected):
    assert pretrained.is_local_path(path) == expected


def test_is_local_path_existing_folder(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    assert pretrained.is_local_path("models")


# --- loading a local folder ---------------------------------------------------------------------

def test_writes_loadable_layout(saved):
    folder, _ = saved
    pretrained.check_local_folder(folder)


def test_load_float32_dtype(saved):
    folder, _ = saved
    model = pretrained.load_pretrained_model(PretrainedSource(folder, dtype="float32"))
    assert model.dtype == torch.float32


def test_load_bfloat16_dtype(saved):
    folder, _ = saved
    model = pretrained.load_pretrained_model(PretrainedSource(folder, dtype="bfloat16"))
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_load_eager_attention(saved):
    folder, _ = saved
    model = pretrained.load_pretrained_model(PretrainedSource(folder, dtype="float32"))
    assert model.config._attn_implementation == "eager"


def test_load_float32_logits_equal(saved, tokenizer):
    folder, original = saved
    loaded = pretrained.load_pretrained_model(PretrainedSource(folder, dtype="float32"))
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    original.eval()
    with torch.no_grad():
        expected = original(input_ids=ids).logits
        actual = loaded(input_ids=ids).logits
    assert torch.equal(actual, expected)


def test_load_bfloat16_logits_close(saved, tokenizer):
    folder, original = saved
    loaded = pretrained.load_pretrained_model(PretrainedSource(folder, dtype="bfloat16"))
    ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    original.eval()
    with torch.no_grad():
        expected = original(input_ids=ids).logits
        actual = loaded(input_ids=ids).logits.float()
    # bfloat16 keeps 8 significant bits, so logits of a random model differ by about 1% of their scale.
    assert torch.allclose(actual, expected, atol=0.05 * expected.abs().max().item())


def test_tokenizer_same_ids(saved, tokenizer):
    folder, _ = saved
    loaded = pretrained.load_pretrained_tokenizer(PretrainedSource(folder))
    assert loaded(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]


def test_tokenizer_round_trip(saved):
    folder, _ = saved
    loaded = pretrained.load_pretrained_tokenizer(PretrainedSource(folder))
    assert loaded.decode(loaded(TEXT)["input_ids"], skip_special_tokens=True) == TEXT


def test_tokenizer_special_ids(saved, tokenizer):
    folder, _ = saved
    loaded = pretrained.load_pretrained_tokenizer(PretrainedSource(folder))
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id) == (0, 1, 2)


def test_load_pretrained_pair(saved, tokenizer):
    folder, _ = saved
    model, loaded_tokenizer = pretrained.load_pretrained(PretrainedSource(folder, dtype="float32"))
    assert model.config.vocab_size == len(loaded_tokenizer)


def test_local_load_stays_offline(saved, no_network):
    folder, _ = saved
    model, _ = pretrained.load_pretrained(PretrainedSource(folder, dtype="float32"))
    assert model.dtype == torch.float32


# --- errors for local folders -------------------------------------------------------------------

def test_missing_folder(tmp_path):
    folder = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as caught:
        pretrained.load_pretrained_model(PretrainedSource(folder))
    assert f"folder {folder} not found" in str(caught.value)
    assert f"hf download <model id> --local-dir {folder}" in str(caught.value)


def test_path_is_file(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file, expected a folder"):
        pretrained.load_pretrained_model(PretrainedSource(file))


def test_missing_config(saved):
    folder, _ = saved
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        pretrained.load_pretrained_model(PretrainedSource(folder))


def test_pickled_weights_named(saved):
    folder, model = saved
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError) as caught:
        pretrained.load_pretrained_model(PretrainedSource(folder))
    message = str(caught.value)
    assert f"no safetensors weights (model.safetensors or model.safetensors.index.json) in the pretrained model folder {folder}" in message
    assert "['pytorch_model.bin']" in message
    assert "safe_serialization=True" in message


def test_missing_weights_without_pickles(saved):
    folder, _ = saved
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as caught:
        pretrained.load_pretrained_model(PretrainedSource(folder))
    assert "Found pickled weights" not in str(caught.value)


def test_missing_tokenizer_files(saved):
    folder, _ = saved
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no tokenizer file \(tokenizer.json, tokenizer.model"):
        pretrained.load_pretrained_tokenizer(PretrainedSource(folder))


def test_revision_with_local_folder(saved):
    folder, _ = saved
    with pytest.raises(ValueError, match="has no revisions. Remove revision"):
        pretrained.load_pretrained_model(PretrainedSource(folder, revision="main"))


def test_sdpa_error_names_fix(saved):
    folder, _ = saved
    with pytest.raises(ValueError) as caught:
        pretrained.load_pretrained_model(PretrainedSource(folder, dtype="float32", attn_implementation="sdpa"))
    assert "attn_implementation 'sdpa'" in str(caught.value)
    assert "Set attn_implementation to 'eager'" in str(caught.value)


def test_flash_attention_missing_package(saved, monkeypatch):
    folder, _ = saved
    real_find_spec = pretrained.importlib.util.find_spec
    monkeypatch.setattr(pretrained.importlib.util, "find_spec",
                        lambda name, *args: None if name == "flash_attn" else real_find_spec(name, *args))
    source = PretrainedSource(folder, attn_implementation="flash_attention_2")
    with pytest.raises(ImportError, match="needs the flash-attn package"):
        pretrained.load_pretrained_model(source)


def test_local_folder_copy_loads(saved, tmp_path):
    folder, _ = saved
    copy = shutil.copytree(folder, tmp_path / "copy")
    model = pretrained.load_pretrained_model(PretrainedSource(copy, dtype="float16"))
    assert model.dtype == torch.float16


# --- hub errors ---------------------------------------------------------------------------------

def test_hub_offline_model(hub_offline):
    with pytest.raises(PretrainedSourceError) as caught:
        pretrained.load_pretrained_model(PretrainedSource(UNKNOWN_ID))
    message = str(caught.value)
    assert f"cannot load the model of {UNKNOWN_ID}" in message
    assert "HF_HUB_OFFLINE=1 is set" in message
    assert f"hf download {UNKNOWN_ID} --local-dir <folder>" in message
    assert f"No local folder {UNKNOWN_ID} exists either" in message


def test_hub_offline_tokenizer(hub_offline):
    with pytest.raises(PretrainedSourceError) as caught:
        pretrained.load_pretrained_tokenizer(PretrainedSource(UNKNOWN_ID, revision="abc123"))
    message = str(caught.value)
    assert f"cannot load the tokenizer of {UNKNOWN_ID} (revision abc123)" in message
    assert f"hf download {UNKNOWN_ID} --revision abc123 --local-dir <folder>" in message


def test_hub_gated_model(monkeypatch, no_network):
    from huggingface_hub.errors import GatedRepoError

    _fake_hub_download(monkeypatch, _http_error(GatedRepoError, 401))
    with pytest.raises(PretrainedSourceError) as caught:
        pretrained.load_pretrained_model(PretrainedSource(UNKNOWN_ID))
    message = str(caught.value)
    assert f"{UNKNOWN_ID} is a gated model" in message
    assert "set HF_TOKEN" in message


def test_hub_unknown_id(monkeypatch, no_network):
    from huggingface_hub.errors import RepositoryNotFoundError

    _fake_hub_download(monkeypatch, _http_error(RepositoryNotFoundError, 404))
    with pytest.raises(PretrainedSourceError) as caught:
        pretrained.load_pretrained_tokenizer(PretrainedSource(UNKNOWN_ID))
    message = str(caught.value)
    assert f"{UNKNOWN_ID} is neither a local folder nor a model on the hub" in message
    assert "Check the id" in message


def test_hub_unknown_revision(monkeypatch, no_network):
    from huggingface_hub.errors import RevisionNotFoundError

    _fake_hub_download(monkeypatch, _http_error(RevisionNotFoundError, 404))
    with pytest.raises(PretrainedSourceError, match="revision 'v9' does not exist"):
        pretrained.load_pretrained_model(PretrainedSource(UNKNOWN_ID, revision="v9"))


def test_hub_unpinned_revision_warning(hub_offline, caplog):
    with caplog.at_level("WARNING", logger=pretrained.logger.name), pytest.raises(PretrainedSourceError):
        pretrained.load_pretrained(PretrainedSource(UNKNOWN_ID))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == pretrained.logger.name]
    assert len(warnings) == 1
    assert "Set revision to a commit" in warnings[0]
