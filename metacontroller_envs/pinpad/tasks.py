"""The paper's PinPad tasks (Kobayashi et al. 2025, Table A1) and task validation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Task = tuple[int, ...]

#: Table A1: the 16 pretraining tasks, three colour pairs each.
PRETRAIN_TASKS: tuple[Task, ...] = (
    (0, 1, 4, 5, 0, 1),
    (0, 1, 4, 5, 2, 3),
    (0, 1, 6, 7, 2, 3),
    (2, 3, 0, 1, 4, 5),
    (2, 3, 6, 7, 2, 3),
    (2, 3, 6, 7, 4, 5),
    (4, 5, 0, 1, 4, 5),
    (4, 5, 0, 1, 6, 7),
    (4, 5, 2, 3, 6, 7),
    (6, 7, 2, 3, 0, 1),
    (6, 7, 2, 3, 6, 7),
    (6, 7, 4, 5, 0, 1),
    (0, 1, 6, 7, 4, 5),
    (2, 3, 0, 1, 6, 7),
    (4, 5, 2, 3, 0, 1),
    (6, 7, 4, 5, 2, 3),
)

#: The held-out post-training task: none of its pair-to-pair transitions is in Table A1.
POSTTRAIN_TASK: Task = (0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3)

#: Colours form abstract subgoals two at a time: 0-1, 2-3, 4-5, 6-7.
SUBGOAL_SIZE = 2

#: The held-out ladder, rung -> task: the post-training task's first 2, 3 and 4 pairs, and
#: the whole of it (6 pairs). Shorter rungs keep a first success within reach of a small
#: model; none of their pair-to-pair transitions is in Table A1 either (tested).
LADDER: dict[int, Task] = {
    **{pairs: POSTTRAIN_TASK[: SUBGOAL_SIZE * pairs] for pairs in (2, 3, 4)},
    6: POSTTRAIN_TASK,
}

#: The paper's 8 colours make 4 pairs.
NUM_PAIRS = 4


def parse_task(task: str | Iterable[int], num_colours: int) -> Task:
    """A task as a tuple of colours; accepts "0-1-4-5" or a sequence of ints."""
    if isinstance(task, str):
        parts = [p for p in task.replace(",", "-").replace(" ", "-").split("-") if p]
        try:
            colours = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"task {task!r} is not a list of colours: write it like '0-1-4-5'"
            ) from None
    else:
        try:
            colours = tuple(int(c) for c in task)
        except (TypeError, ValueError):
            raise ValueError(
                f"task {task!r} is not a sequence of integer colours 0..{num_colours - 1}"
            ) from None
    if not colours:
        raise ValueError(
            f"empty task {task!r}: a task is a non-empty sequence of colours 0..{num_colours - 1}"
        )
    unknown = [c for c in colours if not 0 <= c < num_colours]
    if unknown:
        raise ValueError(
            f"task {task!r} has unknown colour(s) {unknown}: with num_colours={num_colours} "
            f"the colours are 0..{num_colours - 1}"
        )
    return colours


def parse_tasks(tasks: Sequence[str | Iterable[int]], num_colours: int) -> tuple[Task, ...]:
    """A non-empty tuple of validated tasks."""
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or len(tasks) == 0:
        raise ValueError(
            f"tasks must be a non-empty list of tasks such as [(0, 1, 4, 5)], got {tasks!r}"
        )
    return tuple(parse_task(t, num_colours) for t in tasks)


def pair_transitions(task: Sequence[int]) -> set[tuple[int, int]]:
    """The (pair, next pair) steps of a task made of whole pairs, e.g. 0-1-4-5 -> {(0, 2)}."""
    pairs = [colour // SUBGOAL_SIZE for colour in task[::SUBGOAL_SIZE]]
    return set(zip(pairs[:-1], pairs[1:], strict=True))


def format_task(task: Iterable[int]) -> str:
    """'0-1-4-5', the way the paper writes tasks."""
    return "-".join(str(int(c)) for c in task if c >= 0)
