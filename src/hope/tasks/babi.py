"""A bAbI story generator for tasks qa1-qa5 (Weston et al. 2015), the facts of BABILong.

A small world of actors, locations and objects is simulated action by action; each action is told
as one sentence with bAbI's wording, and the question is answered from the world state:

* qa1 single supporting fact: "Where is Mary?" after moves;
* qa2 two supporting facts: "Where is the football?" (carried objects move with their carrier);
* qa3 three supporting facts: "Where was the football before the kitchen?" (the place the object
  was in before it last arrived at its current place);
* qa4 two argument relations: "What is north of the kitchen?" / "What is the kitchen north of?";
* qa5 three argument relations: questions about the latest handing over ("Who gave the football
  to Fred?", "Who received the football?", "What did Jeff give to Fred?", ...).

Answers are single words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hope.errors import HopeError

BABI_TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")
ACTORS = ("Mary", "John", "Daniel", "Sandra")
GIVING_ACTORS = ("Bill", "Fred", "Jeff", "Mary")
LOCATIONS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
MOVE = ("{a} moved to the {x}.", "{a} went to the {x}.", "{a} journeyed to the {x}.", "{a} travelled to the {x}.",
        "{a} went back to the {x}.")
GRAB = ("{a} picked up the {o}.", "{a} got the {o}.", "{a} grabbed the {o}.", "{a} took the {o}.")
DROP = ("{a} dropped the {o}.", "{a} put down the {o}.", "{a} discarded the {o}.", "{a} left the {o}.")
GIVE = ("{a} gave the {o} to {b}.", "{a} handed the {o} to {b}.", "{a} passed the {o} to {b}.")
DIRECTIONS = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
DEFAULT_FACTS = {"qa1": (2, 10), "qa2": (4, 16), "qa3": (6, 20), "qa4": (2, 2), "qa5": (6, 20)}


@dataclass(frozen=True)
class BabiStory:
    task: str
    facts: tuple[str, ...]
    question: str
    answer: str


@dataclass
class World:
    """Where actors are, who holds what, where loose objects lie, where each object has been."""

    location: dict[str, str] = field(default_factory=dict)
    holder: dict[str, str] = field(default_factory=dict)
    lying: dict[str, str] = field(default_factory=dict)
    trail: dict[str, list[str]] = field(default_factory=dict)
    gifts: list[tuple[str, str, str]] = field(default_factory=list)

    def where(self, obj: str) -> str | None:
        if obj in self.holder:
            return self.location.get(self.holder[obj])
        return self.lying.get(obj)

    def move(self, actor: str, place: str) -> None:
        self.location[actor] = place
        for obj, who in self.holder.items():
            if who == actor:
                self._visit(obj, place)

    def grab(self, actor: str, obj: str) -> None:
        self.lying.pop(obj, None)
        self.holder[obj] = actor
        self._visit(obj, self.location[actor])

    def drop(self, actor: str, obj: str) -> None:
        del self.holder[obj]
        self.lying[obj] = self.location[actor]

    def give(self, giver: str, obj: str, receiver: str) -> None:
        self.holder[obj] = receiver
        self.gifts.append((giver, obj, receiver))

    def _visit(self, obj: str, place: str) -> None:
        trail = self.trail.setdefault(obj, [])
        if not trail or trail[-1] != place:
            trail.append(place)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _possible_actions(world: World, actors: tuple[str, ...], objects: bool, giving: bool) -> dict[str, list[tuple]]:
    actions: dict[str, list[tuple]] = {"move": [(a,) for a in actors]}
    if objects:
        placed = [a for a in actors if a in world.location]
        actions["grab"] = [(a, o) for a in placed for o in OBJECTS
                           if o not in world.holder and world.lying.get(o, world.location[a]) == world.location[a]]
        actions["drop"] = [(a, o) for o, a in world.holder.items() if a in world.location]
    if giving:
        actions["give"] = [(a, o, b) for o, a in world.holder.items() for b in actors
                           if b != a and a in world.location and world.location.get(b) == world.location[a]]
    return {kind: options for kind, options in actions.items() if options}


WEIGHTS = {"move": 0.4, "grab": 0.25, "drop": 0.15, "give": 0.35}


def _simulate(rng: np.random.Generator, num_facts: int, actors: tuple[str, ...], objects: bool, giving: bool) -> tuple[World, list[str]]:
    world, facts = World(), []
    for _ in range(num_facts):
        actions = _possible_actions(world, actors, objects, giving)
        kinds = sorted(actions)
        weights = np.array([WEIGHTS[k] for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        args = _pick(rng, actions[kind])
        if kind == "move":
            (actor,) = args
            others = sorted({world.location[b] for b in actors if b != actor and b in world.location} - {world.location.get(actor)})
            if giving and others and rng.random() < 0.5:
                place = _pick(rng, others)
            else:
                place = _pick(rng, [x for x in LOCATIONS if x != world.location.get(actor)])
            world.move(actor, place)
            facts.append(_pick(rng, MOVE).format(a=actor, x=place))
        elif kind == "grab":
            world.grab(*args)
            facts.append(_pick(rng, GRAB).format(a=args[0], o=args[1]))
        elif kind == "drop":
            world.drop(*args)
            facts.append(_pick(rng, DROP).format(a=args[0], o=args[1]))
        else:
            world.give(*args)
            facts.append(_pick(rng, GIVE).format(a=args[0], o=args[1], b=args[2]))
    return world, facts


def _question_qa1(rng, world: World) -> tuple[str, str] | None:
    actor = _pick(rng, sorted(world.location))
    return f"Where is {actor}?", world.location[actor]


def _question_qa2(rng, world: World) -> tuple[str, str] | None:
    known = [o for o in OBJECTS if world.where(o) is not None]
    if not known:
        return None
    obj = _pick(rng, known)
    return f"Where is the {obj}?", world.where(obj)


def _question_qa3(rng, world: World) -> tuple[str, str] | None:
    travelled = [o for o in OBJECTS if len(world.trail.get(o, [])) >= 2]
    if not travelled:
        return None
    obj = _pick(rng, travelled)
    return f"Where was the {obj} before the {world.trail[obj][-1]}?", world.trail[obj][-2]


def _question_qa5(rng, world: World) -> tuple[str, str] | None:
    if not world.gifts:
        return None
    giver, obj, receiver = world.gifts[-1]
    return _pick(rng, [
        (f"Who gave the {obj} to {receiver}?", giver),
        (f"Who gave the {obj}?", giver),
        (f"Who received the {obj}?", receiver),
        (f"What did {giver} give to {receiver}?", obj),
        (f"Who did {giver} give the {obj} to?", receiver),
    ])


def _story_qa4(rng: np.random.Generator) -> BabiStory:
    places = [str(p) for p in rng.choice(LOCATIONS, size=3, replace=False)]
    cells = {places[0]: (0, 0)}
    relations = []
    for place in places[1:]:
        while True:
            anchor = _pick(rng, sorted(cells))
            direction = _pick(rng, sorted(DIRECTIONS))
            dx, dy = DIRECTIONS[direction]
            cell = (cells[anchor][0] + dx, cells[anchor][1] + dy)
            if cell not in cells.values():
                cells[place] = cell
                relations.append((place, direction, anchor))
                break
    order = rng.permutation(len(relations))
    facts = tuple(f"The {relations[i][0]} is {relations[i][1]} of the {relations[i][2]}." for i in order)
    place, direction, anchor = relations[int(rng.integers(len(relations)))]
    if rng.random() < 0.5:
        place, direction, anchor = anchor, OPPOSITE[direction], place
    if rng.random() < 0.5:
        return BabiStory("qa4", facts, f"What is {direction} of the {anchor}?", place)
    return BabiStory("qa4", facts, f"What is the {place} {direction} of?", anchor)


_QUESTIONS = {"qa1": _question_qa1, "qa2": _question_qa2, "qa3": _question_qa3, "qa5": _question_qa5}


def generate_story(task: str, rng: np.random.Generator, num_facts: int | None = None) -> BabiStory:
    """One story of ``num_facts`` facts (drawn from the task's default range when ``None``) and its question."""
    if task not in BABI_TASKS:
        raise HopeError(f"unknown bAbI task {task!r}; expected one of {', '.join(BABI_TASKS)}")
    if task == "qa4":
        return _story_qa4(rng)
    low, high = DEFAULT_FACTS[task]
    if num_facts is not None and num_facts < 1:
        raise HopeError(f"num_facts must be at least 1, got {num_facts}")
    for _ in range(1000):
        count = int(rng.integers(low, high + 1)) if num_facts is None else num_facts
        actors = GIVING_ACTORS if task == "qa5" else ACTORS
        world, facts = _simulate(rng, count, actors, objects=task != "qa1", giving=task == "qa5")
        asked = _QUESTIONS[task](rng, world)
        if asked is not None:
            return BabiStory(task, tuple(facts), *asked)
    raise HopeError(f"could not generate a {task} story with {num_facts} facts; use more facts")
