"""Evaluation: greedy exact-match accuracy per op x {equation, word problem}, and text CE.

Language setting: retain is the English validation CE and forget the Korean validation CE (higher
is more forgotten). Each validation document is scored on its own, preceded by ``<bos>`` as in
training, cut to ``seq_len`` tokens and right-padded. The CE is the mean over all non-padding target
tokens of the set (token-weighted), whereas Lee et al. (arXiv 2506.06278) average per-batch
means.

Arithmetic prompts start with ``<bos>``, as in training where ``<bos>`` separates documents. The
model decodes greedily; the first whitespace- or ``<bos>``-separated piece of the output is parsed as
a number and scored correct within 1e-6, so "4" matches 4.0. Retain accuracy is the mean over
{addition, subtraction} x {equation, word problem}; forget accuracy the same over multiplication and
division.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch

from undo_lib.arithmetic import FORGET_OPS, RETAIN_OPS, is_correct
from undo_lib.data import PackedData
from undo_lib.losses import causal_ce
from undo_lib.tokenizer import BOS_ID, PAD_ID

logger = logging.getLogger(__name__)


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded with special tokens kept), in batches.

    Prompts are batched in order of length, so short equations are not padded to the length of
    word problems; the outputs come back in the order of ``prompts``.
    """
    device = next(model.parameters()).device
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        chunk = [[BOS_ID] + encoded[i] for i in indices]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.tensor([[PAD_ID] * (width - len(ids)) + ids for ids in chunk], device=device)
        attention_mask = (torch.arange(width, device=device)[None, :] >= torch.tensor(
            [width - len(ids) for ids in chunk], device=device)[:, None]).long()
        generated = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=PAD_ID, eos_token_id=None, use_cache=True,
        )
        for i, text in zip(indices, tokenizer.batch_decode(generated[:, width:], skip_special_tokens=False)):
            outputs[i] = text
    return outputs


def group_problems(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Evaluation records grouped by (op, kind)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["op"], r["kind"])].append(r)
    return dict(groups)


def summarize(accuracies: dict[str, float]) -> dict[str, float]:
    """Add ``retain`` and ``forget`` (means over their ops and both kinds) to per-set accuracies."""
    out = dict(accuracies)
    for name, ops in (("retain", RETAIN_OPS), ("forget", FORGET_OPS)):
        keys = [k for k in accuracies if k.split("/")[1] in ops]
        if keys:
            out[name] = sum(accuracies[k] for k in keys) / len(keys)
    return out


class ArithmeticEvaluator:
    """Callable that scores a model on the evaluation sets; optionally only some ops."""

    def __init__(self, tokenizer, records: list[dict], batch_size: int, max_new_tokens: int,
                 ops: tuple[str, ...] | None = None, english: PackedData | None = None):
        self.tokenizer = tokenizer
        self.groups = {k: v for k, v in group_problems(records).items() if ops is None or k[0] in ops}
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.english = english

    def __call__(self, model) -> dict[str, float]:
        keys = sorted(self.groups)
        problems = [p for k in keys for p in self.groups[k]]
        outputs = greedy_generate(model, self.tokenizer, [p["prompt"] for p in problems],
                                  self.max_new_tokens, self.batch_size)
        correct: dict[str, list[bool]] = defaultdict(list)
        for p, out in zip(problems, outputs):
            correct[f"acc/{p['op']}/{p['kind']}"].append(is_correct(out, float(p["answer"])))
        metrics = summarize({k: sum(v) / len(v) for k, v in correct.items()})
        if self.english is not None:
            metrics["english_ce"] = text_ce(model, self.english, self.batch_size)
        return metrics


@torch.no_grad()
def text_ce(model, data: PackedData, batch_size: int) -> float:
    """Token-weighted mean next-token CE over all counted targets of ``data``."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        ids = data.input_ids[i : i + batch_size].to(device)
        mask = data.loss_mask[i : i + batch_size].to(device)
        n = int(mask[:, 1:].sum())
        if n:
            total += causal_ce(model(input_ids=ids).logits, ids, mask).item() * n
            count += n
    if count == 0:
        raise ValueError("text_ce got no counted target tokens; check the validation data and its loss mask")
    return total / count


def document_batch(tokenizer, texts: list[str], seq_len: int) -> PackedData:
    """One right-padded row per document: ``<bos>`` + its tokens, cut to ``seq_len``.

    ``loss_mask`` marks the non-padding tokens, so ``text_ce`` counts every real target token once.
    Right padding needs no attention mask: causal attention never lets a real token see the padding.
    """
    if not texts:
        raise ValueError("document_batch got no documents; check the validation split of the data stage")
    rows = [([BOS_ID] + ids)[:seq_len] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        loss_mask[i, : len(row)] = True
    return PackedData(input_ids, loss_mask)


class LanguageEvaluator:
    """Callable returning English CE (retain) and Korean CE (forget) on validation documents.

    With no English documents it returns the Korean CE only (relearning attacks).
    """

    def __init__(self, tokenizer, english: list[str], korean: list[str], seq_len: int, batch_size: int):
        self.english = document_batch(tokenizer, english, seq_len) if english else None
        self.korean = document_batch(tokenizer, korean, seq_len)
        self.batch_size = batch_size

    def __call__(self, model) -> dict[str, float]:
        korean_ce = text_ce(model, self.korean, self.batch_size)
        if self.english is None:
            return {"forget": korean_ce, "korean_ce": korean_ce}
        english_ce = text_ce(model, self.english, self.batch_size)
        return {"retain": english_ce, "forget": korean_ce, "english_ce": english_ce, "korean_ce": korean_ce}
