"""BABILong-style reasoning in a haystack (Kuratov et al. 2024; NL Fig. 9).

A bAbI story (``hope.tasks.babi``) has its facts spread, in order, at random unit boundaries of a
haystack of real text, so that the row is exactly ``length`` tokens of the LM tokenizer::

    haystack with facts | " Question: {question} Answer:" | " {answer}"

``length=None`` gives the bare story (BABILong's "0K"), rows of varying length padded in a batch.
The one-word answer is teacher forced after the question and scored as one group.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.tasks.babi import BABI_TASKS, DEFAULT_FACTS, generate_story
from hope.tasks.base import RowBuilder, Task, check_positive
from hope.tasks.haystack import HAYSTACKS, interleave, sample_haystack


@dataclass(frozen=True)
class BabiLongTask(Task):
    tokenizer: Any = dataclasses.field(default=None, compare=False, repr=False)
    task: str = "qa1"
    length: int | None = None
    haystack: str = "text"
    num_facts: int | None = None

    def __post_init__(self) -> None:
        if self.tokenizer is None:
            object.__setattr__(self, "tokenizer", BytesTokenizer())
        if self.task not in BABI_TASKS:
            raise HopeError(f"unknown bAbI task {self.task!r}; expected one of {', '.join(BABI_TASKS)}")
        if self.haystack not in HAYSTACKS:
            raise HopeError(f"unknown haystack {self.haystack!r}; expected one of {', '.join(HAYSTACKS)}")
        if self.length is not None:
            check_positive("length", self.length)
        if self.num_facts is not None:
            check_positive("num_facts", self.num_facts)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"babilong_{self.task}"

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.eot_id)

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        story = generate_story(self.task, rng, self.num_facts)
        fact_ids = [self._encode(" " + fact) for fact in story.facts]
        question_ids = self._encode(f" Question: {story.question} Answer:")
        answer_ids = self._encode(f" {story.answer}")
        row = RowBuilder()
        if self.length is None:
            fact_starts = [row.extend(ids) for ids in fact_ids]
            haystack_length = 0
        else:
            budget = self.length - sum(f.size for f in fact_ids) - question_ids.size - answer_ids.size
            if budget < 0:
                most = DEFAULT_FACTS[self.task][1] if self.num_facts is None else self.num_facts
                raise HopeError(f"length {self.length} is too short for this {self.task} story ({self.length - budget} "
                                f"tokens without haystack; stories have up to {most} facts)")
            haystack = sample_haystack(self.haystack, self.tokenizer, budget, rng)
            slots = np.sort(rng.integers(len(haystack.boundaries), size=len(fact_ids))).tolist()
            segments, starts = interleave(haystack, fact_ids, slots)
            for segment in segments:
                row.extend(segment)
            fact_starts = [int(s) for s in starts]
            haystack_length = budget
        row.extend(question_ids)
        answer_start = row.extend_answer(answer_ids)
        info = {
            "task": self.task, "facts": list(story.facts), "fact_starts": fact_starts, "question": story.question,
            "answer": story.answer, "answer_start": answer_start, "haystack_length": haystack_length, "length": len(row),
        }
        return row, info

    def _encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), dtype=np.int64)
