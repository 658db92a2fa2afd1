"""Stream tasks (hope.tasks.streams): cipher languages and long documents, checked against the corpus text
independently of the generator, their metrics against hand-computed values, and the runner's window-by-window
loss against one full forward pass."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hope.checkpoint import load_checkpoint
from hope.data.corpus import load_corpus
from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.models import build
from hope.tasks.config import TaskRunConfig
from hope.tasks.registry import get_task
from hope.tasks.runner import QUICK_MODEL, run_task, stream_eval_rows, stream_losses
from hope.tasks.streams import (CipherStream, LongDocumentStream, loss_by_position, position_bins, running_count_losses,
                                stream_metrics)


@pytest.fixture
def corpus_dir(tmp_path):
    """A hundred documents of random letters and spaces (about five held out for test): a 64-byte stretch of
    them occurs once."""
    rng = np.random.default_rng(7)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
    for k in range(100):
        (tmp_path / f"doc{k:03d}.txt").write_text("".join(rng.choice(letters, size=int(rng.integers(100, 300)))))
    return str(tmp_path)


def _extend(mapping, plain, cipher):
    """``mapping`` (plain byte -> cipher id) extended by the pairs of ``plain`` and ``cipher``; None if that would
    not be a bijection."""
    forward, backward = dict(mapping), {v: k for k, v in mapping.items()}
    for a, b in zip(plain, cipher):
        if forward.setdefault(a, b) != b or backward.setdefault(b, a) != a:
            return None
    return forward


def _decipher_offsets(text: bytes, segment: np.ndarray) -> list[tuple[int, dict]]:
    """Every offset of ``text`` that a bijection maps onto ``segment``, with that bijection."""
    found = []
    for offset in range(len(text) - segment.size + 1):
        mapping = _extend({}, text[offset: offset + segment.size], segment.tolist())
        if mapping is not None:
            found.append((offset, mapping))
    return found


def test_cipher_stream_segments_are_held_out_text_in_one_cipher_per_language(corpus_dir):
    text = "\n\n".join(doc.text for doc in load_corpus(corpus_dir).test).encode()
    stream = CipherStream(segment=64, pattern="ABA", data=corpus_dir, tokenizer=BytesTokenizer())
    row = stream.row(np.random.default_rng(3))
    assert row.ids.shape == (3 * 64 + 1,) and row.ids[0] == BytesTokenizer.eot_id
    assert row.ids[1:].max() < 256
    assert [name for name, _, _ in row.segments] == ["A1", "B1", "A2"]
    maps = {}
    for name, start, stop in row.segments:
        found = _decipher_offsets(text, row.ids[1 + start: 1 + stop])
        assert len(found) == 1, f"{name}: {len(found)} places in the held-out text"
        maps[name] = found[0][1]
    assert _extend(maps["A1"], list(maps["A2"]), list(maps["A2"].values())) is not None  # one cipher for A
    shared = set(maps["A1"]) & set(maps["B1"])
    assert any(maps["A1"][b] != maps["B1"][b] for b in shared)  # another for B


def test_letter_cipher_permutes_the_letters_alike_in_both_cases_and_keeps_every_other_byte(tmp_path):
    rng = np.random.default_rng(11)
    symbols = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;!?\n"))
    for k in range(60):
        (tmp_path / f"doc{k:03d}.txt").write_text("".join(rng.choice(symbols, size=int(rng.integers(200, 400)))))
    text = "\n\n".join(doc.text for doc in load_corpus(str(tmp_path)).test).encode()
    row = CipherStream(segment=128, pattern="AB", alphabet="letters", data=str(tmp_path)).row(np.random.default_rng(2))
    lower, upper = range(ord("a"), ord("z") + 1), range(ord("A"), ord("Z") + 1)
    maps = {}
    for name, start, stop in row.segments:
        found = _decipher_offsets(text, row.ids[1 + start: 1 + stop])
        assert len(found) == 1, f"{name}: {len(found)} places in the held-out text"
        mapping = found[0][1]
        for plain, cipher in mapping.items():
            if plain in lower:
                assert cipher in lower and mapping.get(plain - 32, cipher - 32) == cipher - 32
            elif plain in upper:
                assert cipher in upper
            else:
                assert cipher == plain
        maps[name] = mapping
    shared = set(maps["A1"]) & set(maps["B1"]) & set(lower)
    assert any(maps["A1"][b] != maps["B1"][b] for b in shared)
    plain = CipherStream(segment=128, pattern="AB", alphabet="none", data=str(tmp_path)).row(np.random.default_rng(2))
    for name, start, stop in plain.segments:
        assert bytes(plain.ids[1 + start: 1 + stop].tolist()) in text, name


def test_same_text_reads_one_passage_in_every_segment(corpus_dir):
    text = "\n\n".join(doc.text for doc in load_corpus(corpus_dir).test).encode()
    twice = CipherStream(segment=64, pattern="AA", alphabet="none", same_text=True, data=corpus_dir)
    row = twice.row(np.random.default_rng(4))
    (_, a, b), (_, c, d) = row.segments
    assert (a, b, c, d) == (0, 64, 64, 128)
    assert np.array_equal(row.ids[1 + a: 1 + b], row.ids[1 + c: 1 + d])
    assert bytes(row.ids[1 + a: 1 + b].tolist()) in text
    fresh = CipherStream(segment=64, pattern="AA", alphabet="none", data=corpus_dir).row(np.random.default_rng(4))
    assert not np.array_equal(fresh.ids[1:65], fresh.ids[65:129])
    ciphered = CipherStream(segment=64, pattern="AB", same_text=True, data=corpus_dir).row(np.random.default_rng(4))
    offsets = [{offset for offset, _ in _decipher_offsets(text, ciphered.ids[1 + a: 1 + b])}
               for _, a, b in ciphered.segments]
    assert len(offsets[0]) == 1 and offsets[0] == offsets[1]  # the same passage, in two ciphers
    assert not np.array_equal(ciphered.ids[1:65], ciphered.ids[65:129])
    with pytest.raises(HopeError, match="same_text must be true or false"):
        CipherStream(same_text="yes")


def test_streams_are_deterministic_in_their_generator(corpus_dir):
    cipher = CipherStream(segment=64, data=corpus_dir)
    documents = LongDocumentStream(length=300, data=corpus_dir)
    for stream in (cipher, documents):
        first, again = stream.row(np.random.default_rng(5)), stream.row(np.random.default_rng(5))
        other = stream.row(np.random.default_rng(6))
        assert np.array_equal(first.ids, again.ids) and first.segments == again.segments
        assert not np.array_equal(first.ids, other.ids)


def test_document_stream_is_whole_held_out_documents_then_a_cut(corpus_dir):
    held_out = {doc.name: doc.text for doc in load_corpus(corpus_dir).test}
    stream = LongDocumentStream(length=400, data=corpus_dir)
    row = stream.row(np.random.default_rng(0))
    assert row.ids.shape == (401,) and row.ids[0] == BytesTokenizer.eot_id
    cuts = np.flatnonzero(row.ids == BytesTokenizer.eot_id)
    texts = [bytes(row.ids[a + 1: b].tolist()).decode() for a, b in zip(cuts[:-1], cuts[1:])]
    tail = bytes(row.ids[cuts[-1] + 1:].tolist()).decode()
    names = [name for name, _, _ in row.segments]
    assert len(set(names)) == len(names) and len(names) == len(texts) + (1 if tail else 0)
    assert texts == [held_out[name] for name in names[: len(texts)]]
    assert not tail or held_out[names[-1]].startswith(tail)


def test_stream_metrics_by_hand():
    curve = np.concatenate([np.full(50, 3.0), np.full(50, 1.0), np.full(100, 4.0), np.full(30, 2.0), np.full(70, 0.5)])
    metrics = stream_metrics(curve, (("A1", 0, 100), ("B1", 100, 200), ("A2", 200, 300)), window=10)
    assert metrics["segments"]["A1"] == {"mean": 2.0, "first": 3.0, "last": 1.0}
    assert metrics["segments"]["A2"]["first"] == 2.0
    # tokens 27..36 of A2: three at 2.0, seven at 0.5, mean 0.95 <= 1.0; tokens 26..35: 1.1
    assert metrics["returns"] == {"A2": {"after": "A1", "forgetting": 1.0, "recovery_tokens": 37}}
    never = stream_metrics(np.concatenate([np.zeros(20), np.ones(40)]), (("A1", 0, 20), ("B1", 20, 40), ("A2", 40, 60)), 5)
    assert never["returns"]["A2"] == {"after": "A1", "forgetting": 1.0, "recovery_tokens": None}
    assert stream_metrics(np.zeros(40), (("A1", 0, 20), ("A2", 20, 40)), 5)["returns"] == {}  # no language between


def test_loss_by_position_by_hand():
    assert position_bins(200, 64) == [(0, 64), (64, 128), (128, 200)]
    losses = np.tile(np.arange(200, dtype=float), (3, 1))
    assert loss_by_position(losses, 64) == [[0, 64, 31.5], [64, 128, 95.5], [128, 200, 163.5]]


def test_bad_stream_options_raise_one_line_errors(corpus_dir):
    with pytest.raises(HopeError, match="upper-case"):
        CipherStream(pattern="aba")
    with pytest.raises(HopeError, match="alphabet must be one of bytes, letters, none"):
        CipherStream(alphabet="words")
    with pytest.raises(HopeError, match="tokenizer bytes"):
        CipherStream(tokenizer=type("BPE", (), {"kind": "bpe"})())
    with pytest.raises(HopeError, match="fewer than segment"):
        CipherStream(segment=10 ** 6, data=corpus_dir).row(np.random.default_rng(0))
    with pytest.raises(HopeError, match="lower --option length"):
        LongDocumentStream(length=10 ** 6, data=corpus_dir).row(np.random.default_rng(0))
    with pytest.raises(HopeError, match="split must be"):
        LongDocumentStream(split="train", data=corpus_dir).row(np.random.default_rng(0))


@pytest.mark.parametrize("arch", ["transformer", "hope", "gated-deltanet", "titans"])
def test_window_by_window_loss_with_the_state_carried_is_the_full_forward_loss(arch):
    torch.manual_seed(0)
    model = build(arch=arch, size="tiny", vocab_size=257, **QUICK_MODEL).eval()
    ids = np.random.default_rng(0).integers(0, 257, size=(2, 97))
    inputs, targets = torch.from_numpy(ids[:, :-1]), torch.from_numpy(ids[:, 1:])
    with torch.no_grad():
        full = F.cross_entropy(model(inputs).logits.transpose(1, 2), targets, reduction="none").numpy()
        windows = [F.cross_entropy(model(inputs[:, s: s + 32]).logits.transpose(1, 2), targets[:, s: s + 32],
                                   reduction="none").numpy() for s in range(0, 96, 32)]
    carried = stream_losses(model, ids, 32, True, torch.device("cpu"))
    reset = stream_losses(model, ids, 32, False, torch.device("cpu"))
    np.testing.assert_allclose(carried, full, atol=1e-4)
    np.testing.assert_allclose(reset, np.concatenate(windows, axis=1), atol=1e-4)
    assert not np.allclose(reset[:, 32:], full[:, 32:], atol=1e-3)  # the carried state matters


@pytest.mark.parametrize("task", ["stream_cipher", "stream_long_document"])
def test_carried_and_reset_readings_score_the_same_rows(corpus_dir, task):
    """The evaluation settings differ only in how the rows are read, so they read the same rows (paired)."""
    spec = get_task(task)
    options = {"segment": 64} if task == "stream_cipher" else {"length": 256}
    config = TaskRunConfig(task=task, out="unused", seed=3, eval_examples=2, options={**options, "data": corpus_dir})
    rows = {label: stream_eval_rows(spec, BytesTokenizer(), config, overrides)[1]
            for label, overrides in spec.evals.items()}
    assert set(rows) == {"carried", "reset"}
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(rows["carried"], rows["reset"]))
    other = stream_eval_rows(spec, BytesTokenizer(), dataclasses.replace(config, seed=4), spec.evals["reset"])
    assert not np.array_equal(other[1][0].ids, rows["reset"][0].ids)


def test_running_count_losses_by_hand():
    """Row [0, 1, 0, 0] over two ids: 1 after counts (2, 1), 0 after (2, 2), 0 after (3, 2)."""
    losses = running_count_losses(np.array([[0, 1, 0, 0], [1, 1, 1, 1]]), 2)
    assert np.allclose(losses[0], [np.log(3), np.log(2), np.log(5 / 3)])
    assert np.allclose(losses[1], [np.log(3 / 2), np.log(4 / 3), np.log(5 / 4)])


def test_a_streamed_cipher_run_saves_the_model_it_scored(corpus_dir, tmp_path):
    config = TaskRunConfig(task="stream_cipher", arch="hope", out=str(tmp_path / "run"), steps=2, batch_size=2,
                           seq_len=16, stream=True, eval_examples=2, eval_batch_size=2, save_model=True,
                           progress=False, options={"segment": 64, "alphabet": "letters", "data": corpus_dir},
                           model={**QUICK_MODEL, "cms_periods": (16, 32), "chunk_size": 16, "memory_chunk_size": 16})
    result = run_task(config)
    model, tokenizer, _ = load_checkpoint(tmp_path / "run" / "model")
    assert model.config.cms_periods == (16, 32) and tokenizer.kind == "bytes"
    spec = get_task("stream_cipher")
    _, rows = stream_eval_rows(spec, tokenizer, config, spec.evals["carried"])
    losses = stream_losses(model.eval(), np.stack([row.ids for row in rows]), 16, True, torch.device("cpu"))
    assert losses.mean() == pytest.approx(result["evals"]["carried"]["loss"], rel=1e-5)
    again = run_task(dataclasses.replace(config, out=str(tmp_path / "again"), steps=0, save_model=False,
                                         checkpoint=str(tmp_path / "run" / "model")))
    assert again["loss_curve"] == [] and again["config"]["steps"] == 0
    for label in ("carried", "reset"):
        assert again["evals"][label]["loss"] == pytest.approx(result["evals"][label]["loss"], rel=1e-5)
    with pytest.raises(HopeError, match="not the continual task"):
        TaskRunConfig(task="continual_sotu_eras", out=str(tmp_path / "eras"), steps=0, checkpoint=str(tmp_path / "run"))
