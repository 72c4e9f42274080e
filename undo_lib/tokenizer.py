"""Byte-level BPE tokenizer trained locally and saved in Hugging Face format.

Special-token ids follow Gemma's: pad 0, eos 1, bos 2 (plus unk 3). Digits are split into single
tokens before byte-level BPE, as Gemma's tokenizer does, so every number is spelt digit by digit and
a prompt ending in "= " tokenizes as a prefix of the full equation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers fast tokenizer.

    Args:
        texts: training text, one document per item.
        vocab_size: size of the vocabulary, special tokens included.
        min_frequency: minimum count of a pair before it is merged.

    Returns:
        A tokenizer with pad/eos/bos/unk at ids 0..3 that adds no special tokens by itself.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    ids = [wrapped.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    if ids != [PAD_ID, EOS_ID, BOS_ID, UNK_ID]:
        raise RuntimeError(f"special tokens got ids {ids}, expected [0, 1, 2, 3]")
    logger.info("trained byte-level BPE with %d tokens", len(wrapped))
    return wrapped


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by ``save_pretrained`` from a local folder, never from a hub."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer.json in {path}. Run the data stage first (dvc repro) or pass the folder "
            "that holds the saved tokenizer."
        )
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]
