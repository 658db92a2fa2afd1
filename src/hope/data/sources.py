"""Documents of a source to prepare, read one at a time (``hope data prepare``; docs/data.md, token shards).

A source is a text file (cut into pieces at line breaks), a folder (each ``.txt`` file one document, each record
of a ``.jsonl`` or ``.parquet`` file one document), a JSONL or Parquet file (one document per record, its text in
``text_field``), or ``hf:NAME[:CONFIG][:SPLIT]``: a Hugging Face dataset, streamed with ``datasets`` (a folder
written by ``save_to_disk`` is read from disk). Every document has a stable name (file, line or row), from which
``hope.data.corpus.split_of`` draws its split.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from hope.data.corpus import Document
from hope.errors import HopeError

PIECE_CHARS = 1 << 20
"""The longest piece a text file is cut into (characters); small files are cut into about 100 pieces."""
RECORD_SUFFIXES = (".jsonl", ".parquet")


def iter_documents(source: str, text_field: str = "text") -> Iterator[Document]:
    """The non-empty documents of ``source``, in a fixed order."""
    if source.startswith("hf:"):
        documents = _hugging_face(source[3:], text_field)
    else:
        path = Path(source)
        if not path.exists():
            raise HopeError(f"source {path} does not exist")
        documents = _folder(path, text_field) if path.is_dir() else _file(path, path.name, text_field, whole=False)
    return (doc for doc in documents if doc.text.strip())


def _folder(path: Path, text_field: str) -> Iterator[Document]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", *RECORD_SUFFIXES))
    if not files:
        raise HopeError(f"source folder {path} holds no .txt, .jsonl or .parquet files")
    for file in files:
        yield from _file(file, str(file.relative_to(path)), text_field, whole=True)


def _file(path: Path, name: str, text_field: str, whole: bool) -> Iterator[Document]:
    if path.suffix == ".jsonl":
        return _jsonl(path, name, text_field)
    if path.suffix == ".parquet":
        return _parquet(path, name, text_field)
    return _text(path, name, whole)


def _text(path: Path, name: str, whole: bool) -> Iterator[Document]:
    """A whole file as one document, or a text file cut at line breaks into pieces of at most ``PIECE_CHARS``."""
    piece = path.stat().st_size if whole else max(1, min(PIECE_CHARS, path.stat().st_size // 100))
    lines: list[str] = []
    size, index = 0, 0
    try:
        with path.open(encoding="utf-8") as file:
            for line in file:
                lines.append(line)
                size += len(line)
                if size >= piece and not whole:
                    yield Document(f"{name}#{index}", "".join(lines))
                    lines, size, index = [], 0, index + 1
    except UnicodeDecodeError as err:
        raise HopeError(f"source file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if lines:
        yield Document(f"{name}#{index}" if not whole else name, "".join(lines))


def _text_of(record: object, text_field: str, where: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        raise HopeError(f"{where} has no text field {text_field!r} (choose it with --text-field)")
    text = record[text_field]
    if text is None:
        return ""
    if not isinstance(text, str):
        raise HopeError(f"{where}: field {text_field!r} holds {type(text).__name__}, not text")
    return text


def _jsonl(path: Path, name: str, text_field: str) -> Iterator[Document]:
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise HopeError(f"{path}:{number} is not valid JSON ({err.msg})") from None
            yield Document(f"{name}:{number}", _text_of(record, text_field, f"{path}:{number}"))


def _parquet(path: Path, name: str, text_field: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet  # optional
    except ImportError:
        raise HopeError(f"source {path} needs the datasets extra (pyarrow): pip install 'hope[datasets]'") from None

    try:
        file = pyarrow.parquet.ParquetFile(path)
    except pyarrow.ArrowException as err:
        raise HopeError(f"source file {path} is not a Parquet file ({err})") from None
    if text_field not in file.schema_arrow.names:
        raise HopeError(f"{path} has no text field {text_field!r} (its fields: {', '.join(file.schema_arrow.names)}; "
                        f"choose one with --text-field)")
    row = 0
    for batch in file.iter_batches(batch_size=1024, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            yield Document(f"{name}#{row}", _text_of({text_field: text}, text_field, f"{path} row {row}"))
            row += 1


def _hugging_face(spec: str, text_field: str) -> Iterator[Document]:
    """``NAME[:CONFIG][:SPLIT]`` (split ``train`` by default); a ``save_to_disk`` folder is loaded from disk."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise HopeError(f"hf source {spec!r}: expected hf:NAME[:CONFIG][:SPLIT]")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None), \
        (parts[2] if len(parts) > 2 and parts[2] else "train")
    try:
        import datasets  # optional
    except ImportError:
        raise HopeError(f"source {'hf:' + spec} needs the datasets extra: pip install 'hope[datasets]'") from None
    try:
        if Path(name).is_dir():
            loaded = datasets.load_from_disk(name)
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise HopeError(f"dataset {name} has no split {split!r} (its splits: {', '.join(loaded)})")
                loaded = loaded[split]
        else:
            loaded = datasets.load_dataset(name, config, split=split, streaming=True)
    except HopeError:
        raise
    except Exception as err:  # datasets raises many kinds (offline, not found, bad config)
        raise HopeError(f"could not load Hugging Face dataset {spec!r} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None
    row, records = 0, iter(loaded)
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as err:  # a streamed dataset can fail mid-way (network, a bad file)
            raise HopeError(f"reading Hugging Face dataset {spec!r} failed at row {row} ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''})") from None
        yield Document(f"{name}/{split}#{row}", _text_of(record, text_field, f"dataset {spec} row {row}"))
        row += 1
