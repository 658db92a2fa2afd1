"""Streamed batches (hope.data.stream): windows never cross documents and read every document whole, batches are a
pure function of (seed, step), a memory-mapped token store works unchanged."""

import numpy as np
import pytest
import torch

from hope.data.dataset import TokenSplit
from hope.data.stream import IGNORE_INDEX, DocumentStream, document_starts
from hope.errors import HopeError

EOT = 0


def documents(lengths, seed=0):
    """Token stream of documents of the given lengths (each ending with EOT, other tokens in 1..49)."""
    rng = np.random.default_rng(seed)
    docs = [np.append(rng.integers(1, 50, size=n - 1), EOT) for n in lengths]
    return np.concatenate(docs).astype(np.uint16), docs


def test_document_starts_derived_from_end_of_text_or_given():
    tokens, docs = documents([4, 1, 7, 3])
    split = TokenSplit(tokens, len(tokens))
    np.testing.assert_array_equal(document_starts(split, EOT), [0, 4, 5, 12])
    given = TokenSplit(tokens, len(tokens), document_starts=np.array([0, 5]))
    np.testing.assert_array_equal(document_starts(given, EOT), [0, 5])
    for bad in ([1, 5], [0, 5, 5], [0, 15]):
        with pytest.raises(HopeError, match="document starts"):
            document_starts(TokenSplit(tokens, 1, document_starts=np.array(bad)), EOT)


@pytest.mark.parametrize("seq_len", [1, 3, 4, 8])
def test_windows_read_each_document_whole(seq_len):
    tokens, docs = documents([4, 1, 7, 3, 9])
    stream = DocumentStream(tokens, document_starts(TokenSplit(tokens, 1), EOT), seq_len=seq_len, eot_id=EOT)
    for d, doc in enumerate(docs):
        windows = [stream.window(d, k) for k in range(stream.windows[d])]
        inputs = np.concatenate([x for x, _ in windows])
        targets = np.concatenate([y for _, y in windows])
        real = targets != IGNORE_INDEX
        np.testing.assert_array_equal(targets[real], doc)
        assert real[: len(doc)].all() and not real[len(doc):].any()
        np.testing.assert_array_equal(inputs[: len(doc)], np.append(EOT, doc[:-1]))
        assert len(targets) - len(doc) < seq_len
    assert stream.padding == pytest.approx(1 - len(tokens) / (stream.windows.sum() * seq_len))


def test_rows_walk_their_documents_and_restart_exactly_at_document_starts():
    tokens, docs = documents([5, 2, 9, 4])
    stream = DocumentStream(tokens, document_starts(TokenSplit(tokens, 1), EOT), seq_len=3, eot_id=EOT)
    per_epoch = int(stream.windows.sum())
    batches = [stream.batch_at(step, batch_size=3, seed=7) for step in range(2 * per_epoch + 1)]
    for row in range(3):
        targets = torch.cat([b.targets[row] for b in batches[:per_epoch]])
        read = targets[targets != IGNORE_INDEX].numpy()
        restarts = [step for step, b in enumerate(batches[:per_epoch]) if b.restart[row]]
        order = []
        for step in restarts:
            first = batches[step].targets[row, 0].item()
            order.append(next(d for d, doc in enumerate(docs) if doc[0] == first and d not in order))
        np.testing.assert_array_equal(read, np.concatenate([docs[d] for d in order]))
        assert sorted(order) == list(range(len(docs)))
        assert restarts == list(np.concatenate([[0], np.cumsum(stream.windows[order])[:-1]]))
    assert batches[per_epoch].documents == 3 * len(docs) and batches[0].documents == 0
    assert bool(batches[per_epoch].restart.all())


def test_batches_are_a_pure_function_of_seed_and_step_and_rows_slice_the_batch():
    tokens, _ = documents([5, 2, 9, 4, 11, 3])
    starts = document_starts(TokenSplit(tokens, 1), EOT)
    a = DocumentStream(tokens, starts, seq_len=4, eot_id=EOT)
    b = DocumentStream(tokens, starts, seq_len=4, eot_id=EOT)
    for step in (0, 5, 17, 3):
        whole = a.batch_at(step, batch_size=4, seed=1)
        again = b.batch_at(step, batch_size=4, seed=1)
        part = b.batch_at(step, batch_size=4, seed=1, rows=slice(2, 4))
        for x, y, z in zip(whole[:3], again[:3], part[:3]):
            torch.testing.assert_close(x, y)
            torch.testing.assert_close(x[2:4], z)
    assert not torch.equal(a.batch_at(3, batch_size=4, seed=1).targets, a.batch_at(3, batch_size=4, seed=2).targets)


def test_a_memory_mapped_store_gives_the_same_batches(tmp_path):
    tokens, _ = documents([5, 2, 9, 4])
    path = tmp_path / "tokens.bin"
    tokens.tofile(path)
    mapped = np.memmap(path, dtype=np.uint16, mode="r")
    starts = document_starts(TokenSplit(tokens, 1), EOT)
    for step in range(6):
        x = DocumentStream(tokens, starts, seq_len=3, eot_id=EOT).batch_at(step, batch_size=2, seed=0)
        y = DocumentStream(mapped, starts, seq_len=3, eot_id=EOT).batch_at(step, batch_size=2, seed=0)
        torch.testing.assert_close(x.targets, y.targets)
        torch.testing.assert_close(x.inputs, y.inputs)


def test_evaluation_reads_every_document_once():
    tokens, docs = documents([5, 2, 9, 4, 6])
    stream = DocumentStream(tokens, document_starts(TokenSplit(tokens, 1), EOT), seq_len=4, eot_id=EOT)
    batches = list(stream.evaluation_batches(2))
    for row in range(2):
        targets = torch.cat([b.targets[row] for b in batches])
        np.testing.assert_array_equal(targets[targets != IGNORE_INDEX].numpy(), np.concatenate(docs[row::2]))
    assert len(list(stream.evaluation_batches(2, max_steps=2))) == 2
