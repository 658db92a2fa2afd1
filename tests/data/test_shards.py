"""Token shards (``hope.data.shards``): prepared splits hold exactly the documents' tokens, the shard reader
answers like the in-memory array, and a broken or unfinished folder is a one-line error."""

import json
import random

import numpy as np
import pytest

from hope.data.corpus import split_of
from hope.data.dataset import TokenSplit, batch_at, eval_windows, load_dataset, load_encoded
from hope.data.shards import INDEX, PrepareConfig, ShardedTokens, open_shards, prepare, token_dtype
from hope.data.tokenizer import BytesTokenizer, load_tokenizer
from hope.errors import HopeError

WORDS = "state union congress nation people law war peace trade money year time".split()


def make_texts(n: int = 240, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))) + f" é{i}" for i in range(n)]


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def prepared(tmp_path, source, tokenizer="bytes", **options):
    out = tmp_path / "shards"
    prepare(PrepareConfig(source=str(source), tokenizer=tokenizer, out=str(out), progress=False, **options))
    return out


def expected_split(names_texts, split, tokenizer=BytesTokenizer()):
    docs = [tokenizer.encode(t) + [tokenizer.eot_id] for name, t in names_texts if split_of(name) == split]
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    return np.concatenate([np.asarray(d) for d in docs]), starts


def test_prepared_splits_hold_every_document_in_order_across_shard_files(tmp_path):
    texts = make_texts()
    source = write_jsonl(tmp_path / "docs.jsonl", texts)
    out = prepared(tmp_path, source, shard_tokens=1000, batch_documents=7)
    dataset = load_dataset(str(out))
    names_texts = [(f"docs.jsonl:{i + 1}", t) for i, t in enumerate(texts)]
    assert len(list(out.glob("train-*.tokens"))) > 3
    for split in ("train", "validation", "test"):
        tokens, starts = expected_split(names_texts, split)
        got = dataset[split]
        assert isinstance(got.tokens, ShardedTokens) and got.tokens.dtype == np.uint16
        assert len(got.tokens) == len(tokens) > 0
        np.testing.assert_array_equal(got.tokens[:], tokens)
        np.testing.assert_array_equal(got.document_starts, starts)
        assert got.n_bytes == sum(len(t.encode()) for n, t in names_texts if split_of(n) == split)


def test_shard_reader_slices_and_gathers_like_the_array(tmp_path):
    texts = make_texts()
    out = prepared(tmp_path, write_jsonl(tmp_path / "docs.jsonl", texts), shard_tokens=777)
    sharded = load_dataset(str(out))["train"].tokens
    array = sharded[:]
    rng = np.random.default_rng(0)
    for a, b in rng.integers(0, len(array), size=(200, 2)):
        assert np.array_equal(sharded[a:b], array[a:b])
    idx = rng.integers(0, len(array), size=(7, 5))
    np.testing.assert_array_equal(sharded[idx], array[idx])
    assert sharded[-1] == array[-1] and sharded[777] == array[777]
    with pytest.raises(IndexError):
        sharded[len(array)]


def test_batches_and_eval_windows_over_shards_equal_the_in_memory_ones(tmp_path):
    out = prepared(tmp_path, write_jsonl(tmp_path / "docs.jsonl", make_texts()), shard_tokens=500)
    split = load_dataset(str(out))["train"]
    in_memory = TokenSplit(split.tokens[:], split.n_bytes)
    for step in (0, 1, 17):
        for got, want in zip(batch_at(split.tokens, step, batch_size=6, seq_len=40, seed=3, rows=slice(1, 4)),
                             batch_at(in_memory.tokens, step, batch_size=6, seq_len=40, seed=3, rows=slice(1, 4))):
            assert got.dtype == want.dtype and bool((got == want).all())
    assert bool((eval_windows(split.tokens, 33, 9) == eval_windows(in_memory.tokens, 33, 9)).all())


@pytest.mark.parametrize("kind", ["parquet", "hf_dataset", "hf_dataset_dict", "folder", "text_file"])
def test_every_source_kind_yields_its_documents(tmp_path, kind):
    texts = make_texts(150, seed=1)
    if kind in ("parquet", "hf_dataset", "hf_dataset_dict"):
        pytest.importorskip("datasets", reason="needs the datasets extra: pip install 'hope[datasets]'")
    if kind == "parquet":
        import pyarrow
        import pyarrow.parquet

        source = tmp_path / "docs.parquet"
        pyarrow.parquet.write_table(pyarrow.table({"body": texts, "n": list(range(len(texts)))}), source)
    elif kind.startswith("hf_"):
        import datasets

        local = datasets.Dataset.from_dict({"body": texts})
        if kind == "hf_dataset_dict":
            local = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": ["not this"] * 3}),
                                          "other": local})
        local.save_to_disk(str(tmp_path / "hf"))
        source = f"hf:{tmp_path / 'hf'}" + ("::other" if kind == "hf_dataset_dict" else "")
    elif kind == "folder":
        source = tmp_path / "folder"
        (source / "sub").mkdir(parents=True)
        for i, text in enumerate(texts[:100]):
            (source / f"{i:03d}.txt").write_text(text)
        write_jsonl(source / "sub" / "more.jsonl", texts[100:], field="body")
    else:
        source = tmp_path / "book.txt"
        source.write_text("\n".join(texts) + "\n")
    out = prepared(tmp_path, source, text_field="body")
    dataset = load_dataset(str(out))
    documents = []
    for split in ("train", "validation", "test"):
        assert dataset[split].document_starts.size > 0
        stream = (dataset[split].tokens[:] % 256).astype(np.uint8).tobytes().split(bytes([0]))
        documents += [d.decode() for d in stream if d]
    if kind == "text_file":
        assert len(documents) > 3 and sorted("".join(documents).splitlines()) == sorted(texts)
    else:
        assert sorted(documents) == sorted(texts)


def test_bpe_and_tokenizer_file_forms_give_the_same_shards(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", make_texts())
    first = prepared(tmp_path / "a", source, tokenizer="bpe", vocab_size=300, bpe_sample_mb=1)
    second = prepared(tmp_path / "b", source, tokenizer=str(first / "tokenizer.json"))
    assert load_tokenizer(first / "tokenizer.json").vocab_size == 300
    for file in sorted(first.glob("*.tokens")):
        assert file.read_bytes() == (second / file.name).read_bytes()
    dataset = load_dataset(str(first), str(first / "tokenizer.json"))
    assert dataset.tokenizer.vocab_size == 300
    with pytest.raises(HopeError, match="another tokenizer"):
        load_dataset(str(first), "bytes")


@pytest.mark.parametrize("spec", ["bpee", "missing.json"])
def test_an_unknown_tokenizer_is_refused_without_the_network(tmp_path, spec):
    with pytest.raises(HopeError, match="unknown tokenizer|is missing"):
        prepared(tmp_path, write_jsonl(tmp_path / "docs.jsonl", make_texts()), tokenizer=spec)


def test_train_texts_with_an_existing_tokenizer_file(tmp_path, text_folder):
    out = prepared(tmp_path, write_jsonl(tmp_path / "docs.jsonl", make_texts()), tokenizer="bpe", vocab_size=280)
    dataset = load_dataset(str(text_folder), str(out / "tokenizer.json"))
    assert dataset.tokenizer.to_json() == (out / "tokenizer.json").read_text()
    assert int(dataset["train"].tokens.max()) < 280


def test_a_large_vocabulary_takes_uint32_and_a_lying_index_is_refused(tmp_path):
    import tokenizers

    vocab = {"<|endoftext|>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    vocab.update({f"w{i}": len(vocab) + i for i in range(70_000)})
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "big.json"))
    texts = [t + " w69999" for t in make_texts()]
    out = prepared(tmp_path, write_jsonl(tmp_path / "docs.jsonl", texts), tokenizer=str(tmp_path / "big.json"))
    split = load_dataset(str(out))["train"]
    assert split.tokens.dtype == np.uint32 and int(split.tokens[:].max()) == vocab["w69999"]
    index = json.loads((out / INDEX).read_text())
    (out / INDEX).write_text(json.dumps({**index, "dtype": "uint16"}))
    with pytest.raises(HopeError, match="does not fit dtype uint16"):
        open_shards(out)
    assert token_dtype(1 << 16) == np.uint16 and token_dtype((1 << 16) + 1) == np.uint32
    with pytest.raises(HopeError, match="does not fit"):
        token_dtype((1 << 32) + 1)


@pytest.mark.parametrize("damage", ["no_index", "missing_shard", "truncated_shard", "corrupt_index",
                                    "other_tokenizer", "missing_starts"])
def test_a_damaged_folder_is_one_clear_error(tmp_path, damage):
    out = prepared(tmp_path, write_jsonl(tmp_path / "docs.jsonl", make_texts()), shard_tokens=2000)
    if damage == "no_index":
        (out / INDEX).unlink()
    elif damage == "missing_shard":
        (out / "train-00001.tokens").unlink()
    elif damage == "truncated_shard":
        (out / "train-00001.tokens").write_bytes((out / "train-00001.tokens").read_bytes()[:-2])
    elif damage == "corrupt_index":
        (out / INDEX).write_text("{not json")
    elif damage == "other_tokenizer":
        (out / "tokenizer.json").write_text(json.dumps({"hope_tokenizer": "bytes", "x": 1}))
    else:
        (out / "validation-documents.npy").unlink()
    with pytest.raises(HopeError, match="prepare them again") as err:
        load_dataset(str(out))
    assert "\n" not in str(err.value)


def test_an_interrupted_prepare_leaves_a_folder_training_refuses(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", make_texts())
    with source.open("a") as file:
        file.write("{broken\n")
    with pytest.raises(HopeError, match=r"docs.jsonl:241 is not valid JSON"):
        prepared(tmp_path, source, shard_tokens=500, batch_documents=10)
    out = tmp_path / "shards"
    assert list(out.glob("train-*.tokens")) and not (out / INDEX).exists()
    with pytest.raises(HopeError, match="did not finish"):
        load_encoded(str(out), BytesTokenizer())


@pytest.mark.parametrize("case", ["empty", "missing_field", "parquet_missing_field", "too_few", "missing",
                                  "already_prepared", "no_files", "bad_hf_spec", "hf_missing_split"])
def test_bad_sources_are_one_clear_error(tmp_path, case):
    source, match = tmp_path / "docs.jsonl", None
    if case == "empty":
        source.write_text("\n" + json.dumps({"text": "  "}) + "\n")
        match = "no non-empty documents"
    elif case == "missing_field":
        write_jsonl(source, make_texts(), field="body")
        match = "no text field 'text'"
    elif case == "parquet_missing_field":
        pytest.importorskip("pyarrow", reason="needs the datasets extra: pip install 'hope[datasets]'")
        import pyarrow
        import pyarrow.parquet

        source = tmp_path / "docs.parquet"
        pyarrow.parquet.write_table(pyarrow.table({"body": make_texts()}), source)
        match = r"no text field 'text' \(its fields: body"
    elif case == "too_few":
        write_jsonl(source, make_texts(3))
        match = "too few documents"
    elif case == "missing":
        match = "does not exist"
    elif case == "already_prepared":
        write_jsonl(source, make_texts())
        prepared(tmp_path, source)
        match = "already holds a prepared dataset"
    elif case == "no_files":
        source = tmp_path / "empty_folder"
        source.mkdir()
        match = "holds no .txt, .jsonl or .parquet files"
    elif case == "bad_hf_spec":
        source = "hf:a:b:c:d"
        match = "expected hf:NAME"
    else:
        datasets = pytest.importorskip("datasets", reason="needs the datasets extra: pip install 'hope[datasets]'")
        datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": make_texts()})}).save_to_disk(
            str(tmp_path / "hf"))
        source = f"hf:{tmp_path / 'hf'}::validation"
        match = r"has no split 'validation' \(its splits: train\)"
    with pytest.raises(HopeError, match=match) as err:
        prepared(tmp_path, source)
    assert "\n" not in str(err.value)
    if case not in ("already_prepared", "too_few"):
        assert not (tmp_path / "shards").exists()
