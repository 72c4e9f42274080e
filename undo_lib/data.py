"""Tokenising, packing and batching documents for every training stage.

Packing follows Lee et al. (arXiv 2506.06278): each document is preceded by a ``<bos>`` separator and appended to a
buffer of ``seq_len`` tokens; the document that crosses the boundary is cut and its rest is thrown
away, so every sequence is exactly ``seq_len`` tokens with no padding, and attention crosses
document boundaries.

Each token also carries a loss-mask bit: 1 where the token is a training target. With
``loss_positions="all"`` (as in that paper) every token is a target. With ``"answers"`` only the answer
tokens of arithmetic documents and the one token after each answer (so the model learns where the
answer ends) are targets, while English documents keep every token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
import torch

from undo_lib.tokenizer import BOS_ID

logger = logging.getLogger(__name__)


@dataclass
class PackedData:
    """Packed sequences: ``input_ids`` and ``loss_mask``, both [num_sequences, seq_len]."""

    input_ids: torch.Tensor
    loss_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def _answer_mask(offsets: list[tuple[int, int]], start: int, end: int) -> list[int]:
    mask = [1 if (s < end and e > start) else 0 for s, e in offsets]
    if 1 in mask:
        last = len(mask) - 1 - mask[::-1].index(1)
        if last + 1 < len(mask):
            mask[last + 1] = 1
    return mask


def tokenize_records(tokenizer, records: list[dict], loss_positions: str) -> list[tuple[list[int], list[int]]]:
    """Token ids and target mask of each record; a trailing ``<bos>`` separator is added to each.

    Records with an ``answer`` field are arithmetic problems (``prompt + answer + suffix``); records
    without one are plain text. The separator's mask bit is 1 when every token is a target, or when
    the answer is the document's last token (equations), so the model learns to end the answer.
    """
    if loss_positions not in ("all", "answers"):
        raise ValueError(f"loss_positions must be 'all' or 'answers', got {loss_positions!r}")
    # The Rust tokenizer directly: the transformers wrapper's Python lists and offset mappings cost
    # more time than the tokenisation itself on a few hundred thousand documents
    encodings = tokenizer.backend_tokenizer.encode_batch([r["text"] for r in records], add_special_tokens=False)
    docs = []
    for record, encoding in zip(records, encodings):
        ids = encoding.ids
        if loss_positions == "all" or "answer" not in record:
            docs.append((ids + [BOS_ID], [1] * (len(ids) + 1)))
            continue
        start = len(record["prompt"])
        mask = _answer_mask(list(encoding.offsets) + [(len(record["text"]), len(record["text"]) + 1)],
                            start, start + len(record["answer"]))
        docs.append((ids + [BOS_ID], mask))
    return docs


def pack(docs: list[tuple[list[int], list[int]]], seq_len: int, bos_id: int = BOS_ID) -> PackedData:
    """Pack tokenised documents into [N, seq_len] sequences, each starting with ``bos_id``.

    A document that does not fit is cut at the sequence end and its rest is dropped, as in the
    paper. An unfinished last sequence is dropped.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    seqs, masks = [], []
    ids_buf, mask_buf = [bos_id], [0]
    for ids, mask in docs:
        room = seq_len - len(ids_buf)
        ids_buf += ids[:room]
        mask_buf += mask[:room]
        if len(ids_buf) == seq_len:
            seqs.append(ids_buf)
            masks.append(mask_buf)
            ids_buf, mask_buf = [bos_id], [0]
    if not seqs:
        raise ValueError(f"not enough text to fill one sequence of {seq_len} tokens ({len(docs)} documents)")
    return PackedData(torch.tensor(seqs, dtype=torch.long), torch.tensor(masks, dtype=torch.bool))


def pack_records(tokenizer, records: list[dict], seq_len: int, loss_positions: str) -> PackedData:
    """Tokenise and pack ``records`` (see ``tokenize_records`` and ``pack``)."""
    data = pack(tokenize_records(tokenizer, records, loss_positions), seq_len)
    logger.info("packed %d documents into %d sequences of %d tokens", len(records), len(data), seq_len)
    return data


def batches(data: PackedData, batch_size: int, seed: int) -> ShuffledBatches:
    """Endless shuffled batches, reshuffled each epoch with a generator seeded by ``seed``.

    The batch size is checked here, before the first batch is drawn, so a misconfigured stage
    fails before any training or evaluation runs.
    """
    if batch_size > len(data):
        raise ValueError(
            f"batch_size {batch_size} is larger than the {len(data)} packed sequences available; "
            "lower the batch size or generate more documents in the data stage"
        )
    return ShuffledBatches(data, batch_size, seed)


class ShuffledBatches:
    """Iterator over endless shuffled batches whose position can be fast-forwarded.

    Each epoch draws one ``torch.randperm`` from a generator seeded by ``seed`` and yields its
    ``len(data) // batch_size`` full batches; the partial batch at the end is dropped. ``skip(n)``
    moves to the state after ``n`` draws by drawing only the permutations, so a resumed training
    run gets the same batches as an uninterrupted one.
    """

    def __init__(self, data: PackedData, batch_size: int, seed: int):
        self.data = data
        self.batch_size = batch_size
        self.batches_per_epoch = len(data) // batch_size
        self._generator = torch.Generator().manual_seed(seed)
        self._order: torch.Tensor | None = None
        self._position = 0  # batches already drawn from the current epoch

    def __iter__(self) -> ShuffledBatches:
        return self

    def _start_epoch_if_needed(self) -> None:
        if self._order is None or self._position == self.batches_per_epoch:
            self._order = torch.randperm(len(self.data), generator=self._generator)
            self._position = 0

    def __next__(self) -> dict[str, torch.Tensor]:
        self._start_epoch_if_needed()
        start = self._position * self.batch_size
        idx = self._order[start : start + self.batch_size]
        self._position += 1
        return {"input_ids": self.data.input_ids[idx], "loss_mask": self.data.loss_mask[idx]}

    def skip(self, count: int) -> None:
        """Advance past ``count`` batches without building them."""
        if count < 0:
            raise ValueError(f"cannot skip a negative number of batches ({count})")
        remaining = count
        while remaining > 0:
            self._start_epoch_if_needed()
            within_epoch = min(remaining, self.batches_per_epoch - self._position)
            self._position += within_epoch
            remaining -= within_epoch


class PairedBatches:
    """Endless (forget, retain) batch pairs for two-term unlearning losses; ``skip`` advances both."""

    def __init__(self, forget: PackedData, retain: PackedData, batch_size: int, seed: int):
        self.forget = batches(forget, batch_size, seed)
        self.retain = batches(retain, batch_size, seed + 1)

    def __iter__(self) -> PairedBatches:
        return self

    def __next__(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"forget": next(self.forget), "retain": next(self.retain)}

    def skip(self, count: int) -> None:
        """Advance past ``count`` pairs without building them."""
        self.forget.skip(count)
        self.retain.skip(count)


def paired_batches(forget: PackedData, retain: PackedData, batch_size: int, seed: int) -> PairedBatches:
    """Endless (forget, retain) batch pairs for two-term unlearning losses."""
    return PairedBatches(forget, retain, batch_size, seed)


def count_tokens(batch: dict) -> int:
    """Tokens in a (possibly nested) batch: the sum of all ``input_ids`` sizes."""
    total = 0
    for key, value in batch.items():
        if isinstance(value, dict):
            total += count_tokens(value)
        elif key == "input_ids":
            total += value.numel()
    return total
