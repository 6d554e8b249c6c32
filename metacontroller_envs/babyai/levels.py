"""The compositional BabyAI family: missions that chain subgoals in BabyAI's own language.

A task is a sequence of subgoals, each one of minigrid's verifier instructions (go to / pick
up an object), chained with "then" (minigrid's BeforeInstr, nested), so minigrid's verifier
scores it and minigrid's BabyAIBot solves it unchanged. As in PinPad, pretraining tasks are
drawn from a fixed set, and the post-training task uses only subgoal-to-subgoal transitions
that never occur in pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence

from minigrid.envs.babyai.core.roomgrid_level import RoomGridLevel
from minigrid.envs.babyai.core.verifier import (
    ActionInstr,
    BeforeInstr,
    GoToInstr,
    Instr,
    ObjDesc,
    PickupInstr,
    SeqInstr,
)
from minigrid.envs.babyai.goto import GoToSeq
from minigrid.envs.babyai.synth import BossLevel, MiniBossLevel

#: The elementary subgoals: (verb, object type, colour). Each object occurs once per room.
SUBGOALS: tuple[tuple[str, str, str], ...] = (
    ("go to", "ball", "red"),
    ("pick up", "key", "green"),
    ("go to", "box", "blue"),
    ("pick up", "ball", "purple"),
    ("go to", "key", "yellow"),
    ("pick up", "box", "grey"),
)


def _pretrain_tasks() -> tuple[tuple[int, ...], ...]:
    """Three subgoals, each step going 1 or 2 forward around the cycle of six (24 tasks)."""
    n = len(SUBGOALS)
    return tuple(
        (a, (a + s) % n, (a + s + t) % n) for a in range(n) for s in (1, 2) for t in (1, 2)
    )


PRETRAIN_TASKS: tuple[tuple[int, ...], ...] = _pretrain_tasks()
#: Six subgoals, each step 3 or 4 forward: no transition of it occurs in pretraining.
POSTTRAIN_TASK: tuple[int, ...] = (0, 3, 1, 4, 2, 5)


def transitions(task: Sequence[int]) -> set[tuple[int, int]]:
    return set(zip(task[:-1], task[1:], strict=True))


class ThenInstr(BeforeInstr):
    """`a, then b` where b may itself be a chain: BeforeInstr without its two-level limit.

    minigrid's verifier, `surface` and BabyAIBot all recurse through BeforeInstr, so they
    handle a chain of any length.
    """

    def __init__(self, instr_a: Instr, instr_b: Instr) -> None:  # no SeqInstr type assert
        self.instr_a, self.instr_b, self.strict = instr_a, instr_b, False


def subgoal_instr(subgoal: int) -> ActionInstr:
    verb, kind, colour = SUBGOALS[subgoal]
    desc = ObjDesc(kind, colour)
    return GoToInstr(desc) if verb == "go to" else PickupInstr(desc)


def chain(task: Sequence[int]) -> Instr:
    instr = subgoal_instr(task[-1])
    for subgoal in reversed(task[:-1]):
        instr = ThenInstr(subgoal_instr(subgoal), instr)
    return instr


def count_subgoals(instr: Instr) -> int:
    """Leaf instructions of a mission: the subgoals the agent must complete."""
    if isinstance(instr, SeqInstr):
        return count_subgoals(instr.instr_a) + count_subgoals(instr.instr_b)
    return 1


def subgoals_done(instr: Instr, status: object = None) -> int:
    """How many leaf instructions of a mission are complete, from the verifier's state."""
    if isinstance(instr, SeqInstr):
        return subgoals_done(instr.instr_a, instr.a_done) + subgoals_done(
            instr.instr_b, instr.b_done
        )
    return int(status == "success")


class SubgoalSequenceLevel(RoomGridLevel):
    """One room holding the six objects of SUBGOALS; the mission chains a task's subgoals."""

    def __init__(self, tasks: Sequence[Sequence[int]], room_size: int = 8, **kwargs) -> None:
        self.tasks = tuple(tuple(t) for t in tasks)
        self.task_index = 0
        super().__init__(room_size=room_size, num_rows=1, num_cols=1, **kwargs)

    def gen_mission(self) -> None:
        for _, kind, colour in SUBGOALS:
            self.add_object(0, 0, kind, colour)
        self.place_agent()
        self.check_objs_reachable()
        self.task_index = self._rand_int(0, len(self.tasks))
        self.instrs = chain(self.tasks[self.task_index])


#: minigrid's own levels, exposed with our observation and subgoal labels.
MINIGRID_LEVELS: dict[str, type[RoomGridLevel]] = {
    "GoToSeq": GoToSeq,
    "MiniBossLevel": MiniBossLevel,
    "BossLevel": BossLevel,
}
