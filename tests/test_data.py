"""Tests for undo_lib.data: answer masks, packing, batching and token counting."""

import itertools

import pytest
import torch

from undo_lib.data import PackedData, batches, count_tokens, pack, pack_records, paired_batches, tokenize_records
from undo_lib.tokenizer import BOS_ID

EQUATION = {"text": "12 / 3 = 4.0", "prompt": "12 / 3 = ", "answer": "4.0", "suffix": ""}
WORD_PROBLEM = {
    "text": "Aisha has 12 apples. Aisha now has 15 apples.",
    "prompt": "Aisha has 12 apples. Aisha now has ",
    "answer": "15",
    "suffix": " apples.",
}
ENGLISH = {"text": "The quick brown fox jumps over the lazy dog."}


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _marked_positions(mask: list[int]) -> list[int]:
    return [i for i, bit in enumerate(mask) if bit]


# tokenize_records


def test_backend_ids_and_offsets_match_wrapper(tokenizer):
    """tokenize_records calls the Rust tokenizer directly, so its ids and offsets must equal the transformers call's."""
    texts = [EQUATION["text"], WORD_PROBLEM["text"], ENGLISH["text"], "한국어 문장 12 + 7 = 19"]
    wrapper = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    backend = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)

    assert [e.ids for e in backend] == wrapper["input_ids"]
    assert [list(e.offsets) for e in backend] == [list(map(tuple, o)) for o in wrapper["offset_mapping"]]


def test_equation_answer_and_separator(tokenizer):
    [(ids, mask)] = tokenize_records(tokenizer, [EQUATION], "answers")

    marked = [ids[i] for i in _marked_positions(mask)]
    assert tokenizer.decode(marked) == "4.0<bos>"
    assert ids[-1] == BOS_ID
    assert len(mask) == len(ids)


def test_equation_mask_positions(tokenizer):
    [(ids, mask)] = tokenize_records(tokenizer, [EQUATION], "answers")

    prompt_len = len(_encode(tokenizer, EQUATION["prompt"]))
    assert _marked_positions(mask) == list(range(prompt_len, len(ids)))


def test_word_problem_suffix_marked(tokenizer):
    [(ids, mask)] = tokenize_records(tokenizer, [WORD_PROBLEM], "answers")

    prompt_len = len(_encode(tokenizer, WORD_PROBLEM["prompt"]))
    answer_end = len(_encode(tokenizer, WORD_PROBLEM["prompt"] + WORD_PROBLEM["answer"]))
    assert _marked_positions(mask) == list(range(prompt_len, answer_end + 1))
    assert tokenizer.decode(ids[prompt_len:answer_end]) == "15"
    next_token = tokenizer.decode([ids[answer_end]])
    assert WORD_PROBLEM["suffix"].startswith(next_token), f"token after the answer is {next_token!r}"
    assert ids[-1] == BOS_ID
    assert mask[-1] == 0, "the trailing <bos> of a word problem must not be a target"


def test_english_fully_marked(tokenizer):
    [(ids, mask)] = tokenize_records(tokenizer, [ENGLISH], "answers")

    assert ids == _encode(tokenizer, ENGLISH["text"]) + [BOS_ID]
    assert mask == [1] * len(ids)


@pytest.mark.parametrize("record", [EQUATION, WORD_PROBLEM, ENGLISH], ids=["equation", "word-problem", "english"])
def test_all_positions_marked(tokenizer, record):
    [(ids, mask)] = tokenize_records(tokenizer, [record], "all")

    assert ids == _encode(tokenizer, record["text"]) + [BOS_ID]
    assert mask == [1] * len(ids)


def test_unknown_loss_positions(tokenizer):
    with pytest.raises(ValueError, match="'prompt'"):
        tokenize_records(tokenizer, [EQUATION], "prompt")


# pack


def test_pack_exact_contents():
    docs = [
        ([10, 11, 12], [1, 1, 1]),
        ([20, 21, 22, 23], [0, 1, 0, 1]),  # crosses the end of sequence 0, so 22 and 23 are dropped
        ([30, 31, 32, 33, 34], [1, 0, 0, 0, 1]),  # fills sequence 1 exactly
        ([40], [1]),  # unfinished tail, dropped
    ]

    data = pack(docs, seq_len=6)

    expected_ids = torch.tensor([[BOS_ID, 10, 11, 12, 20, 21], [BOS_ID, 30, 31, 32, 33, 34]])
    expected_mask = torch.tensor([[0, 1, 1, 1, 0, 1], [0, 1, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(data.input_ids, expected_ids)
    assert torch.equal(data.loss_mask, expected_mask)
    assert len(data) == 2


def test_pack_long_document_cut():
    docs = [(list(range(10, 20)), [1] * 10), ([50, 51, 52], [1, 1, 1])]

    data = pack(docs, seq_len=4)

    # The 10-token document fills one sequence and its remaining 7 tokens are dropped.
    expected_ids = torch.tensor([[BOS_ID, 10, 11, 12], [BOS_ID, 50, 51, 52]])
    assert torch.equal(data.input_ids, expected_ids)


def test_pack_real_documents(tokenizer):
    records = [EQUATION, WORD_PROBLEM, ENGLISH] * 6

    data = pack_records(tokenizer, records, seq_len=16, loss_positions="answers")

    assert data.input_ids.shape[1] == 16
    assert data.input_ids.shape == data.loss_mask.shape
    assert torch.all(data.input_ids[:, 0] == BOS_ID)
    assert not data.loss_mask[:, 0].any()
    assert data.input_ids.dtype == torch.long
    assert data.loss_mask.dtype == torch.bool


def test_pack_too_little_text():
    with pytest.raises(ValueError, match="6 tokens"):
        pack([([10, 11], [1, 1]), ([12], [1])], seq_len=6)


def test_pack_seq_len_too_small():
    with pytest.raises(ValueError, match="seq_len"):
        pack([([10, 11], [1, 1])], seq_len=1)


# batches and paired_batches


def _numbered_data(n: int, seq_len: int = 3, offset: int = 0) -> PackedData:
    """Sequence i contains the value i + offset everywhere, so a batch row shows its source index."""
    ids = (torch.arange(n)[:, None] + offset).repeat(1, seq_len)
    return PackedData(ids, torch.ones(n, seq_len, dtype=torch.bool))


def _row_ids(batch: dict) -> list[int]:
    return batch["input_ids"][:, 0].tolist()


def test_batches_deterministic_for_seed():
    data = _numbered_data(8)

    first = [_row_ids(b) for b in itertools.islice(batches(data, 2, seed=5), 8)]
    second = [_row_ids(b) for b in itertools.islice(batches(data, 2, seed=5), 8)]
    other_seed = [_row_ids(b) for b in itertools.islice(batches(data, 2, seed=6), 8)]

    assert first == second
    assert first != other_seed


def test_batches_cover_each_epoch():
    data = _numbered_data(6)
    stream = batches(data, batch_size=2, seed=0)

    epochs = [[row for b in itertools.islice(stream, 3) for row in _row_ids(b)] for _ in range(3)]

    for epoch in epochs:
        assert sorted(epoch) == list(range(6))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2], "epochs are not reshuffled"


def test_batches_drop_partial_batch():
    data = _numbered_data(7)
    stream = batches(data, batch_size=3, seed=0)

    epoch = [_row_ids(b) for b in itertools.islice(stream, 2)]

    assert all(len(rows) == 3 for rows in epoch)
    assert len(set(epoch[0] + epoch[1])) == 6


def test_batches_keep_mask_aligned():
    data = _numbered_data(4)
    data.loss_mask[2, 1] = False

    batch = next(batches(data, batch_size=4, seed=0))

    row = _row_ids(batch).index(2)
    assert batch["loss_mask"][row].tolist() == [True, False, True]


def test_batch_size_too_large():
    with pytest.raises(ValueError, match="batch_size 5"):
        next(batches(_numbered_data(4), batch_size=5, seed=0))


def test_batch_size_checked_eagerly():
    with pytest.raises(ValueError):
        batches(_numbered_data(4), batch_size=5, seed=0)


def test_paired_batches_yield_both():
    forget = _numbered_data(4, offset=100)
    retain = _numbered_data(4, offset=200)

    pair = next(paired_batches(forget, retain, batch_size=2, seed=0))

    assert set(pair) == {"forget", "retain"}
    assert set(pair["forget"]) == {"input_ids", "loss_mask"}
    assert all(100 <= i < 104 for i in _row_ids(pair["forget"]))
    assert all(200 <= i < 204 for i in _row_ids(pair["retain"]))


@pytest.mark.parametrize("skipped", [0, 1, 2, 3, 4, 7, 12, 20])
def test_skip_equals_drawing(skipped):
    data = _numbered_data(7)  # 3 batches of 2 per epoch, so skips cross epoch boundaries
    drawn = [_row_ids(b) for b in itertools.islice(batches(data, 2, seed=9), skipped + 6)]

    stream = batches(data, 2, seed=9)
    stream.skip(skipped)

    assert [_row_ids(next(stream)) for _ in range(6)] == drawn[skipped:]


def test_skip_after_drawing():
    data = _numbered_data(7)
    drawn = [_row_ids(b) for b in itertools.islice(batches(data, 2, seed=9), 10)]

    stream = batches(data, 2, seed=9)
    next(stream)
    next(stream)
    stream.skip(5)

    assert _row_ids(next(stream)) == drawn[7]


def test_skip_negative_rejected():
    with pytest.raises(ValueError, match="negative"):
        batches(_numbered_data(4), 2, seed=0).skip(-1)


def test_paired_skip_advances_both():
    forget, retain = _numbered_data(6, offset=100), _numbered_data(5, offset=200)
    drawn = list(itertools.islice(paired_batches(forget, retain, batch_size=2, seed=3), 9))

    stream = paired_batches(forget, retain, batch_size=2, seed=3)
    stream.skip(7)
    pair = next(stream)

    assert _row_ids(pair["forget"]) == _row_ids(drawn[7]["forget"])
    assert _row_ids(pair["retain"]) == _row_ids(drawn[7]["retain"])


# count_tokens


def test_count_tokens_nested():
    batch = {
        "forget": {"input_ids": torch.zeros(2, 5, dtype=torch.long), "loss_mask": torch.zeros(2, 5)},
        "retain": {"input_ids": torch.zeros(3, 4, dtype=torch.long), "loss_mask": torch.zeros(3, 4)},
    }

    assert count_tokens(batch) == 2 * 5 + 3 * 4


def test_count_tokens_flat():
    batch = {"input_ids": torch.zeros(4, 7, dtype=torch.long), "loss_mask": torch.zeros(4, 7, dtype=torch.bool)}

    assert count_tokens(batch) == 28
