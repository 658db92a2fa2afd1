"""Token shards: a corpus tokenized once (``hope data prepare``), then read by training without loading it.

A prepared folder holds, per split (train / validation / test, drawn per document by
``hope.data.corpus.split_of``):

- ``SPLIT-NNNNN.tokens``: raw little-endian token ids (``uint16`` when the vocabulary fits, else ``uint32``), the
  split's documents one after another, each ending with the end-of-text id; ``np.memmap``-able. A document may
  continue into the next shard file.
- ``SPLIT-documents.npy``: the offset of each document's first token (``int64``).

and ``tokenizer.json`` and ``index.json`` (format, dtype, the tokenizer's hash, each split's files, tokens, UTF-8
bytes and documents). Every file is written to a temporary name and renamed, ``index.json`` last: a folder without
it (an interrupted prepare) is refused. ``ShardedTokens`` reads the token stream with ``pread`` (no mapping), so a
reader's memory holds only the windows it draws, not the pages it touched (docs/data.md, token shards).
"""

from __future__ import annotations

import array
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hope.data.corpus import SPLITS, Document, split_of
from hope.data.sources import iter_documents
from hope.data.tokenizer import Tokenizer, build_tokenizer, save_tokenizer, tokenizer_from_json
from hope.errors import HopeError
from hope.files import write_atomic
from hope.progress import progress_bar

FORMAT = "hope-shards-v1"
INDEX = "index.json"
TOKENIZER = "tokenizer.json"
SHARD_SUFFIX = ".tokens"


@dataclass
class PrepareConfig:
    """Every option of ``hope data prepare``."""

    source: str = field(metadata={"required": True, "metavar": "SRC"})
    """A text file, a folder (.txt files, one document each; .jsonl / .parquet files, one document per record), a
    .jsonl or .parquet file, or hf:NAME[:CONFIG][:SPLIT] (a Hugging Face dataset, streamed; a save_to_disk folder)."""
    tokenizer: str = field(metadata={"required": True, "metavar": "TOK"})
    """bpe (byte-level BPE trained on a sample of the training split), bytes, a tokenizer.json file, or a
    pretrained Hugging Face tokenizer ORG/NAME (it must have <|endoftext|>)."""
    out: str = field(metadata={"required": True, "metavar": "DIR"})
    """The folder to write (it must not hold a prepared dataset)."""
    vocab_size: int = 4096
    """BPE vocabulary size (only with --tokenizer bpe)."""
    bpe_sample_mb: int = 100
    """The BPE is trained on at most this many MB of training-split text: the first documents of the source."""
    text_field: str = "text"
    """The field of a JSONL / Parquet / Hugging Face record that holds the text."""
    shard_tokens: int = 1 << 27
    """Tokens per shard file (the last of a split holds the rest)."""
    batch_documents: int = 512
    """Documents tokenized at once."""
    progress: bool = True
    """Show a progress bar (on a log file or a pipe: one line a minute, hope.progress)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "bpe_sample_mb", "shard_tokens", "batch_documents"):
            if getattr(self, name) < 1:
                raise HopeError(f"{name} must be >= 1, got {getattr(self, name)}")


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` for vocabularies up to 65,536 ids, else ``uint32``."""
    if vocab_size > 1 << 32:
        raise HopeError(f"a vocabulary of {vocab_size} ids does not fit in uint32 token shards")
    return np.dtype("<u2" if vocab_size <= 1 << 16 else "<u4")


def is_prepared(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder of token shards (complete or not: ``open_shards`` tells which)."""
    if path is None or str(path).startswith("hf:") or not Path(path).is_dir():
        return False
    path = Path(path)
    return (path / INDEX).exists() or any(path.glob(f"*{SHARD_SUFFIX}"))


class ShardWriter:
    """One split's token stream, cut into shard files of ``shard_tokens`` tokens as documents arrive."""

    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.files: list[dict[str, int | str]] = []
        self.starts = array.array("q")
        self.n_tokens = 0
        self.n_bytes = 0

    def add(self, ids: np.ndarray, n_bytes: int) -> None:
        """One document's ids (ending with end-of-text) and its UTF-8 size."""
        self.starts.append(self.n_tokens)
        self.n_tokens += len(ids)
        self.n_bytes += n_bytes
        self.pending.append(ids.astype(self.dtype))
        self.pending_tokens += len(ids)
        if self.pending_tokens >= self.shard_tokens:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        stream = np.concatenate(self.pending) if self.pending else np.empty(0, self.dtype)
        while len(stream) >= self.shard_tokens or (final and len(stream)):
            shard, stream = stream[: self.shard_tokens], stream[self.shard_tokens :]
            name = f"{self.split}-{len(self.files):05d}{SHARD_SUFFIX}"
            write_atomic(self.out / name, shard.tofile)
            self.files.append({"file": name, "tokens": len(shard)})
        self.pending, self.pending_tokens = ([stream] if len(stream) else []), len(stream)

    def finish(self) -> dict[str, object]:
        """Write the last shard and the document offsets; the split's entry of the index."""
        self._flush(final=True)
        name = f"{self.split}-documents.npy"
        starts = np.frombuffer(self.starts, dtype=np.int64)
        write_atomic(self.out / name, lambda tmp: _save_npy(tmp, starts))
        return {"files": self.files, "tokens": self.n_tokens, "bytes": self.n_bytes, "documents": len(starts),
                "document_starts": name}


def _bpe_sample(config: PrepareConfig) -> Iterator[str]:
    """Training-split texts from the start of the source, up to ``bpe_sample_mb`` MB."""
    budget = config.bpe_sample_mb * 1_000_000
    for doc in iter_documents(config.source, config.text_field):
        if split_of(doc.name) == "train":
            yield doc.text
            budget -= len(doc.text.encode("utf-8"))
            if budget <= 0:
                return


def _batches(documents: Iterator[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def prepare(config: PrepareConfig) -> dict[str, object]:
    """Tokenize ``config.source`` into token shards in ``config.out``; returns the index."""
    out = Path(config.out)
    if (out / INDEX).exists():
        raise HopeError(f"{out} already holds a prepared dataset; remove it or choose another --out")
    if out.exists() and not out.is_dir():
        raise HopeError(f"--out {out} is not a folder (a file of that name exists)")
    documents = iter_documents(config.source, config.text_field)
    first = next(documents, None)
    if first is None:
        raise HopeError(f"source {config.source} holds no non-empty documents")
    tokenizer = build_tokenizer(config.tokenizer, _bpe_sample(config) if config.tokenizer == "bpe" else [],
                                config.vocab_size)
    dtype = token_dtype(tokenizer.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    writers = {s: ShardWriter(out, s, dtype, config.shard_tokens) for s in SPLITS}
    bar = progress_bar(desc=f"prepare {config.source}", unit="doc", disable=not config.progress, dynamic_ncols=True)
    with bar:
        for batch in _batches(itertools.chain([first], documents), config.batch_documents):
            texts = [doc.text for doc in batch]
            for doc, ids in zip(batch, tokenizer.encode_batch(texts)):
                tokens = np.fromiter((*ids, tokenizer.eot_id), dtype=np.int64, count=len(ids) + 1)
                if tokens.max() >= tokenizer.vocab_size:
                    raise HopeError(f"tokenizer {config.tokenizer} produced id {tokens.max()} for {doc.name}, "
                                    f"outside its vocabulary of {tokenizer.vocab_size}")
                writers[split_of(doc.name)].add(tokens, len(doc.text.encode("utf-8")))
            bar.update(len(batch))
            bar.set_postfix(tokens=f"{sum(w.n_tokens for w in writers.values()):,}", refresh=False)
    empty = [s for s, w in writers.items() if not w.starts]
    if empty:
        raise HopeError(f"source {config.source} has too few documents for the {' and '.join(empty)} split "
                        f"(about 5% of documents each, drawn by a hash of their names): give it more documents")
    index = {"format": FORMAT, "source": config.source, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size,
             "eot_id": tokenizer.eot_id, "tokenizer_sha256": _sha256(tokenizer.to_json()),
             "splits": {s: w.finish() for s, w in writers.items()}}
    write_atomic(out / TOKENIZER, lambda tmp: save_tokenizer(tokenizer, tmp))
    write_atomic(out / INDEX, lambda tmp: tmp.write_text(json.dumps(index, indent=2)))
    return index


def _save_npy(path: Path, values: np.ndarray) -> None:
    with path.open("wb") as file:  # a file object: np.save would add ".npy" to a temporary name
        np.save(file, values, allow_pickle=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ShardedTokens:
    """One split's token stream over its shard files: ``len``, ``[a:b]`` and integer-array indexing read only
    the tokens asked for (an integer array reads the span it covers), as ``np.ndarray``."""

    def __init__(self, paths: list[Path], counts: list[int], dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.paths = paths
        self._fds: list[int] = []
        self._ends = np.cumsum(np.asarray(counts, dtype=np.int64))
        self._starts = self._ends - np.asarray(counts, dtype=np.int64)
        self._fds = [os.open(path, os.O_RDONLY) for path in paths]

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("ShardedTokens slices take no step")
            return self._read(start, max(start, stop))
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"token {key} is outside a split of {len(self)} tokens")
            return self._read(index, index + 1)[0]
        indices = np.asarray(key, dtype=np.int64)
        if indices.size == 0:
            return np.empty(indices.shape, self.dtype)
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= len(self):
            raise IndexError(f"token indices [{low}, {high}] are outside a split of {len(self)} tokens")
        return self._read(low, high + 1)[indices - low]

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty(stop - start, self.dtype)
        position, shard = start, int(np.searchsorted(self._ends, start, side="right"))
        while position < stop:
            end = min(stop, int(self._ends[shard]))
            view = memoryview(out[position - start : end - start]).cast("B")
            offset = (position - int(self._starts[shard])) * self.dtype.itemsize
            if os.preadv(self._fds[shard], [view], offset) != len(view):
                raise HopeError(f"token shard {self.paths[shard]} is shorter than its index says")
            position, shard = end, shard + 1
        return out

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __del__(self) -> None:
        self.close()


@dataclass
class PreparedSplit:
    tokens: ShardedTokens
    n_bytes: int
    document_starts: np.ndarray


def _index_error(path: Path, problem: str) -> HopeError:
    return HopeError(f"token shards in {path}: {problem} (prepare them again with hope data prepare)")


def open_shards(path: str | Path) -> tuple[Tokenizer, str, dict[str, PreparedSplit]]:
    """The tokenizer, source and splits of a prepared folder, each file checked against the index."""
    path = Path(path)
    if not (path / INDEX).is_file():
        raise _index_error(path, f"no {INDEX}, so the prepare that wrote them did not finish")
    try:
        index = json.loads((path / INDEX).read_text(encoding="utf-8"))
        if index.get("format") != FORMAT:
            raise _index_error(path, f"{INDEX} is not of format {FORMAT}")
        if not (path / TOKENIZER).is_file():
            raise _index_error(path, f"{TOKENIZER} is missing")
        tokenizer_json = (path / TOKENIZER).read_text(encoding="utf-8")
        if _sha256(tokenizer_json) != index["tokenizer_sha256"]:
            raise _index_error(path, f"{TOKENIZER} is not the tokenizer the shards were written with")
        tokenizer = tokenizer_from_json(tokenizer_json, origin=str(path / TOKENIZER))
        dtype = np.dtype(index["dtype"]).newbyteorder("<")
        if dtype not in (np.dtype("<u2"), np.dtype("<u4")) or tokenizer.vocab_size > np.iinfo(dtype).max + 1:
            raise _index_error(path, f"a vocabulary of {tokenizer.vocab_size} ids does not fit dtype {dtype.name}")
        splits = {}
        for name in SPLITS:
            entry = index["splits"][name]
            files = [path / f["file"] for f in entry["files"]]
            counts = [int(f["tokens"]) for f in entry["files"]]
            for file, count in zip(files, counts):
                if not file.is_file():
                    raise _index_error(path, f"shard {file.name} is missing")
                if file.stat().st_size != count * dtype.itemsize:
                    raise _index_error(path, f"shard {file.name} holds {file.stat().st_size} bytes, not the "
                                             f"{count * dtype.itemsize} of its {count} tokens")
            starts_file = path / entry["document_starts"]
            if not starts_file.is_file():
                raise _index_error(path, f"{starts_file.name} is missing")
            starts = np.load(starts_file, mmap_mode="r", allow_pickle=False)
            if len(starts) != int(entry["documents"]) or not files or sum(counts) != int(entry["tokens"]):
                raise _index_error(path, f"the {name} split's files do not match its index entry")
            splits[name] = PreparedSplit(ShardedTokens(files, counts, dtype), int(entry["bytes"]), starts)
    except (KeyError, TypeError, ValueError) as err:
        raise _index_error(path, f"{INDEX} is corrupt ({type(err).__name__}: {err})") from None
    return tokenizer, str(index["source"]), splits
