"""bAbI stories replayed by an independent reader of the fact sentences; BABILong rows of exact length."""

import re

import numpy as np
import pytest

from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.tasks.babi import BABI_TASKS, generate_story
from hope.tasks.babilong import BabiLongTask
from hope.tasks.base import IGNORE_INDEX

MOVE = re.compile(r"(\w+) (?:moved|went|journeyed|travelled|went back) to the (\w+)\.")
GRAB = re.compile(r"(\w+) (?:picked up|got|grabbed|took) the (\w+)\.")
DROP = re.compile(r"(\w+) (?:dropped|put down|discarded|left) the (\w+)\.")
GIVE = re.compile(r"(\w+) (?:gave|handed|passed) the (\w+) to (\w+)\.")
RELATION = re.compile(r"The (\w+) is (north|south|east|west) of the (\w+)\.")
STEP = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}


def replay(facts: list[str], question: str) -> str:
    """Answer ``question`` from ``facts`` alone, checking that every action was possible."""
    at: dict[str, str] = {}
    held_by: dict[str, str] = {}
    lies_in: dict[str, str] = {}
    places: dict[str, list[str]] = {}
    gifts: list[tuple[str, str, str]] = []
    grid: dict[str, tuple[int, int]] = {}
    relations: list[tuple[str, str, str]] = []

    def note(obj: str) -> None:
        place = at[held_by[obj]] if obj in held_by else lies_in[obj]
        if not places.get(obj) or places[obj][-1] != place:
            places.setdefault(obj, []).append(place)

    for fact in facts:
        if m := MOVE.fullmatch(fact):
            at[m[1]] = m[2]
            for obj in [o for o, who in held_by.items() if who == m[1]]:
                note(obj)
        elif m := GRAB.fullmatch(fact):
            assert m[2] not in held_by and lies_in.get(m[2], at[m[1]]) == at[m[1]], fact
            lies_in.pop(m[2], None)
            held_by[m[2]] = m[1]
            note(m[2])
        elif m := DROP.fullmatch(fact):
            assert held_by.pop(m[2]) == m[1], fact
            lies_in[m[2]] = at[m[1]]
        elif m := GIVE.fullmatch(fact):
            assert held_by[m[2]] == m[1] and at[m[3]] == at[m[1]] and m[1] != m[3], fact
            held_by[m[2]] = m[3]
            gifts.append((m[1], m[2], m[3]))
        elif m := RELATION.fullmatch(fact):
            relations.append((m[1], m[2], m[3]))
        else:
            raise AssertionError(f"unreadable fact {fact!r}")

    if relations:
        opposite = {"north": "south", "south": "north", "east": "west", "west": "east"}
        pairs = relations + [(b, opposite[d], a) for a, d, b in relations]
        for a, d, b in relations:  # lay the places on a grid: consistent, one place per cell
            if not grid:
                grid[b] = (0, 0)
            if b in grid:
                grid.setdefault(a, (grid[b][0] + STEP[d][0], grid[b][1] + STEP[d][1]))
            else:
                grid[b] = (grid[a][0] - STEP[d][0], grid[a][1] - STEP[d][1])
            assert grid[a] == (grid[b][0] + STEP[d][0], grid[b][1] + STEP[d][1])
        assert len(set(grid.values())) == len(grid) == 3
        if m := re.fullmatch(r"What is (\w+) of the (\w+)\?", question):
            (answer,) = {a for a, d, b in pairs if d == m[1] and b == m[2]}
            return answer
        m = re.fullmatch(r"What is the (\w+) (\w+) of\?", question)
        (answer,) = {b for a, d, b in pairs if a == m[1] and d == m[2]}
        return answer
    if m := re.fullmatch(r"Where is the (\w+)\?", question):
        return at[held_by[m[1]]] if m[1] in held_by else lies_in[m[1]]
    if m := re.fullmatch(r"Where is (\w+)\?", question):
        return at[m[1]]
    if m := re.fullmatch(r"Where was the (\w+) before the (\w+)\?", question):
        trail = places[m[1]]
        assert trail[-1] == m[2]
        return trail[-2]
    latest = list(reversed(gifts))
    if m := re.fullmatch(r"Who gave the (\w+) to (\w+)\?", question):
        return next(g for g, o, r in latest if o == m[1] and r == m[2])
    if m := re.fullmatch(r"Who gave the (\w+)\?", question):
        return next(g for g, o, r in latest if o == m[1])
    if m := re.fullmatch(r"Who received the (\w+)\?", question):
        return next(r for g, o, r in latest if o == m[1])
    if m := re.fullmatch(r"What did (\w+) give to (\w+)\?", question):
        return next(o for g, o, r in latest if g == m[1] and r == m[2])
    if m := re.fullmatch(r"Who did (\w+) give the (\w+) to\?", question):
        return next(r for g, o, r in latest if g == m[1] and o == m[2])
    raise AssertionError(f"unreadable question {question!r}")


@pytest.mark.parametrize("task", BABI_TASKS)
def test_answers_agree_with_replayed_world(task):
    rng = np.random.default_rng(11)
    for _ in range(150):
        story = generate_story(task, rng)
        assert replay(list(story.facts), story.question) == story.answer, story


@pytest.mark.parametrize("task", BABI_TASKS)
def test_babilong_rows_have_exact_length_and_facts_in_order(task):
    tok = BytesTokenizer()
    spec = BabiLongTask(tokenizer=tok, task=task, length=2048)
    batch = spec.sample(5, 3)
    assert batch.input_ids.shape == (3, 2048)
    for b, info in enumerate(batch.info):
        ids = batch.input_ids[b]
        starts = info["fact_starts"]
        assert starts == sorted(starts)
        for fact, start in zip(info["facts"], starts):
            assert tok.decode(ids[start: start + len(fact) + 1]) == " " + fact
        text = tok.decode(ids)
        assert text.endswith(f" Question: {info['question']} Answer: {info['answer']}")
        assert replay(info["facts"], info["question"]) == info["answer"]
        answer = np.flatnonzero(batch.targets[b] != IGNORE_INDEX)
        assert tok.decode(ids[answer + 1]) == f" {info['answer']}"


def test_bare_stories_and_determinism():
    spec = BabiLongTask(task="qa2")
    a, b, c = spec.sample(1, 4), spec.sample(1, 4), spec.sample(2, 4)
    assert np.array_equal(a.input_ids, b.input_ids)
    assert not np.array_equal(a.input_ids[:, :50], c.input_ids[:, :50])
    for row, info in zip(a.input_ids, a.info):
        assert info["length"] == len(" ".join([""] + info["facts"])) + len(f" Question: {info['question']} Answer: {info['answer']}")
        assert (row[info["length"]:] == spec.pad_id).all()


def test_bad_options_fail_clearly():
    with pytest.raises(HopeError, match="too short"):
        BabiLongTask(task="qa3", length=100).sample(0, 1)
    with pytest.raises(HopeError, match="unknown bAbI task"):
        BabiLongTask(task="qa6")
