"""A hope tokenizer as a ``transformers`` ``PreTrainedTokenizerFast``.

A BPE ``tokenizer.json`` (``hope.data.tokenizer.BPETokenizer``) already is a Hugging Face ``tokenizers`` file and is
wrapped as it is. hope's byte tokenizer (``{"hope_tokenizer": "bytes"}``: UTF-8 bytes as ids 0..255, id 256 ends a
document) becomes an equivalent ``tokenizers`` byte-level tokenizer: a BPE model without merges whose vocabulary is
the 256 byte symbols of the GPT-2 byte-level alphabet, each at its byte's id, so it encodes every text to the ids
hope's byte tokenizer gives (``tests/hf/test_tokenizer.py``).
"""

from __future__ import annotations

import tokenizers
from tokenizers import decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hope.data.tokenizer import END_OF_TEXT, BPETokenizer, BytesTokenizer, Tokenizer


def _byte_symbols() -> list[str]:
    """The printable symbol that byte-level pre-tokenization gives each byte 0..255 (the GPT-2 table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def bytes_as_tokenizers() -> tokenizers.Tokenizer:
    """hope's byte tokenizer as a ``tokenizers.Tokenizer``: byte ``b`` is id ``b``, ``<|endoftext|>`` id 256."""
    vocab = {symbol: byte for byte, symbol in enumerate(_byte_symbols())}
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([END_OF_TEXT])
    return tok


def to_hf_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The ``PreTrainedTokenizerFast`` of a hope tokenizer; ``<|endoftext|>`` is its BOS, EOS and padding token
    (hope separates documents with it and ``hope generate`` starts an empty prompt with it)."""
    if isinstance(tokenizer, BytesTokenizer):
        backend = bytes_as_tokenizers()
    elif isinstance(tokenizer, BPETokenizer):
        backend = tokenizers.Tokenizer.from_str(tokenizer.to_json())
    else:
        raise TypeError(f"not a hope tokenizer: {type(tokenizer).__name__}")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, unk_token=None, clean_up_tokenization_spaces=False)
