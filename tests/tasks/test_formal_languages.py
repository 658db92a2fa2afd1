"""Formal languages: every string is a member, and every prefix label agrees with recognisers
written here independently of the generator (regular expressions and bracket reduction)."""

import re

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.base import IGNORE_INDEX
from hope.tasks.formal_languages import BINS, BOS_ID, LANGUAGES, FormalLanguageTask


def _reduce_brackets(s: str) -> str:
    """Delete adjacent matched pairs until none is left."""
    while "()" in s or "[]" in s:
        s = s.replace("()", "").replace("[]", "")
    return s


def _project(s: str, pair: str) -> str:
    return "".join(c for c in s if c in pair)


def member(language: str, s: str) -> bool:
    if language == "parity":
        return set(s) <= {"0", "1"} and s.count("1") % 2 == 0
    if language == "aa_star":
        return re.fullmatch(r"(aa)*", s) is not None
    if language == "abab_star":
        return re.fullmatch(r"(abab)*", s) is not None
    if language in ("anbn", "anbncn"):
        pattern = r"(a+)(b+)" if language == "anbn" else r"(a+)(b+)(c+)"
        m = re.fullmatch(pattern, s)
        return m is not None and len(set(map(len, m.groups()))) == 1
    if language == "dyck1":
        return set(s) <= set("()") and _reduce_brackets(s) == ""
    if language == "dyck2":
        return set(s) <= set("()[]") and _reduce_brackets(s) == ""
    if language == "shuffle2":
        return set(s) <= set("()[]") and all(_reduce_brackets(_project(s, p)) == "" for p in ("()", "[]"))
    raise AssertionError(language)


def viable(language: str, s: str) -> bool:
    """Whether some continuation of ``s`` is in the language."""
    if s == "":
        return True
    if language == "anbn":
        m = re.fullmatch(r"(a+)(b*)", s)
        return m is not None and len(m[2]) <= len(m[1])
    if language == "anbncn":
        m = re.fullmatch(r"(a+)(b*)(c*)", s)
        if m is None:
            return False
        i, j, k = map(len, m.groups())
        return j <= i if k == 0 else (j == i and k <= i)
    if language in ("dyck1", "dyck2"):
        return not set(_reduce_brackets(s)) & set(")]")
    if language == "shuffle2":
        return all(not set(_reduce_brackets(_project(s, p))) & set(")]") for p in ("()", "[]"))
    raise AssertionError(language)


def expected_label(task: FormalLanguageTask, prefix: str):
    if task.spec.kind == "membership":
        return member(task.language, prefix)
    allowed = {c for c in task.spec.alphabet if viable(task.language, prefix + c)}
    return frozenset(allowed | ({"$"} if member(task.language, prefix) else set()))


@pytest.mark.parametrize("language", sorted(LANGUAGES))
@pytest.mark.parametrize("bin_name", sorted(BINS))
def test_strings_are_members_and_labels_match_recogniser(language, bin_name):
    low, high = BINS[bin_name]
    task = FormalLanguageTask(language=language, min_length=low, max_length=high)
    batch = task.sample(seed=3, batch_size=24)
    alphabet_ids = {task.symbol_id(c): c for c in task.spec.alphabet}
    for b, info in enumerate(batch.info):
        string = info["string"]
        assert low <= len(string) <= high
        assert member(language, string), string
        ids = batch.input_ids[b, : len(string) + 1]
        assert ids[0] == BOS_ID
        assert "".join(alphabet_ids[int(i)] for i in ids[1:]) == string
        assert (batch.input_ids[b, len(string) + 1:] == task.pad_id).all()
        labels = batch.targets[b]
        assert (labels[: len(string) + 1] != IGNORE_INDEX).all()
        assert (labels[len(string) + 1:] == IGNORE_INDEX).all()
        for t in range(len(string) + 1):
            assert task.decode_label(int(labels[t])) == expected_label(task, string[:t]), (string, t)
        assert set(batch.groups[b, : len(string) + 1].tolist()) == {0}
    assert batch.input_ids.max() < task.vocab_size


def test_random_languages_vary_and_are_deterministic():
    for language in ("parity", "dyck1", "dyck2", "shuffle2"):
        task = FormalLanguageTask(language=language, min_length=20, max_length=20)
        first, again, other = (task.sample(s, 16) for s in (7, 7, 8))
        assert np.array_equal(first.input_ids, again.input_ids)
        assert not np.array_equal(first.input_ids, other.input_ids)
        assert len({i["string"] for i in first.info}) > 8


def test_lengths_cover_the_bin():
    task = FormalLanguageTask(language="dyck2", min_length=51, max_length=100)
    lengths = {i["length"] for i in task.sample(0, 400).info}
    assert lengths <= set(range(52, 101, 2))
    assert len(lengths) > 20


def test_bad_options_fail_clearly():
    with pytest.raises(HopeError, match="unknown formal language"):
        FormalLanguageTask(language="dyck3")
    with pytest.raises(HopeError, match="no strings"):
        FormalLanguageTask(language="abab_star", min_length=5, max_length=7)
    with pytest.raises(HopeError, match="max_length"):
        FormalLanguageTask(language="parity", min_length=10, max_length=5)
