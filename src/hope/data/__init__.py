"""Corpus loading, tokenizers and batching."""

from hope.data.corpus import Corpus, Document, load_corpus
from hope.data.dataset import Dataset, TokenSplit, batch_at, encode_corpus, eval_windows, load_dataset
from hope.data.tokenizer import BPETokenizer, BytesTokenizer, Tokenizer, load_tokenizer, save_tokenizer, tokenizer_from_json

__all__ = [
    "BPETokenizer", "BytesTokenizer", "Corpus", "Dataset", "Document", "TokenSplit", "Tokenizer",
    "batch_at", "encode_corpus", "eval_windows", "load_corpus", "load_dataset", "load_tokenizer",
    "save_tokenizer", "tokenizer_from_json",
]
