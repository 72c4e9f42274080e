"""Tests for undo_lib.tokenizer: special ids, digit splitting, prompt prefixes and saving."""

import pytest

from undo_lib.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, encode, load_tokenizer

ROUND_TRIP_TEXTS = [
    "12 + 7 = 19",
    "12 / 3 = 4.0",
    "347 * 29 = 10063",
    "The quick brown fox jumps over the lazy dog.",
    "Aisha has 12 apples. Aisha now has 15 apples.",
    "Unseen words like zyxwvut still round-trip, byte by byte!",
]

# (prompt, full text): evaluation tokenizes the prompt alone, training the full text.
PROMPT_CASES = [
    ("12 + 7 = ", "12 + 7 = 19"),
    ("144 / 12 = ", "144 / 12 = 12.0"),
    ("9 - 4 = ", "9 - 4 = 5"),
    ("Aisha has 12 apples. Mateo gives Aisha 3 more apples. Aisha now has ",
     "Aisha has 12 apples. Mateo gives Aisha 3 more apples. Aisha now has 15 apples."),
    ("The shop has ", "The shop has 31 pencils left."),
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_round_trip(tokenizer, text):
    ids = encode(tokenizer, [text])[0]

    assert tokenizer.decode(ids) == text


def test_special_token_ids(tokenizer):
    assert (PAD_ID, EOS_ID, BOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert tokenizer.pad_token_id == 0
    assert tokenizer.eos_token_id == 1
    assert tokenizer.bos_token_id == 2
    assert tokenizer.unk_token_id == 3


def test_vocab_size(tokenizer):
    assert len(tokenizer) == 320


def test_no_special_tokens_added(tokenizer):
    ids = tokenizer("12 + 7 = 19")["input_ids"]

    assert BOS_ID not in ids
    assert EOS_ID not in ids


def test_digits_single_tokens(tokenizer):
    ids = encode(tokenizer, ["9876543210"])[0]

    assert [tokenizer.decode([i]) for i in ids] == list("9876543210")


def test_bos_text_is_one_token(tokenizer):
    assert encode(tokenizer, ["<bos>"])[0] == [BOS_ID]


@pytest.mark.parametrize("prompt, text", PROMPT_CASES, ids=[p[:12] for p, _ in PROMPT_CASES])
def test_prompt_ids_prefix(tokenizer, prompt, text):
    prompt_ids, text_ids = encode(tokenizer, [prompt, text])

    assert text_ids[: len(prompt_ids)] == prompt_ids


def test_save_and_load(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer.save_pretrained(tmp_path)

    loaded = load_tokenizer(tmp_path)

    for text in ROUND_TRIP_TEXTS:
        assert encode(loaded, [text]) == encode(tokenizer, [text]), f"ids differ for {text!r}"
    assert len(loaded) == len(tokenizer)
    assert loaded.bos_token_id == BOS_ID
    assert loaded.pad_token_id == PAD_ID


def test_load_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        load_tokenizer(tmp_path)

    assert str(tmp_path) in str(excinfo.value)
