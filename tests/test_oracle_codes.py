"""The oracle's bookkeeping: the pairs an episode completed (metacontroller_agents.analysis) and the
pair-to-pair transitions that pretraining shows (experiments/oracle_codes.py)."""

import numpy as np

from experiments.oracle_codes import pretraining_transitions
from experiments.steering import completed_pairs
from metacontroller_envs.pinpad import POSTTRAIN_TASK


def test_completed_pairs_stop_at_the_first_visits_that_break_a_pair():
    colours = np.array(
        [[0, 1, 4, 5, 2, -1, 7], [6, 7, 3, 2, 0, 1, -1], [-1, -1, -1, -1, -1, -1, -1]]
    )
    assert completed_pairs(colours).tolist() == [[0, 2, -1], [3, -1, -1], [-1, -1, -1]]


def test_the_post_training_transitions_are_absent_from_pretraining():
    seen = pretraining_transitions()
    assert len(seen) == 8  # each pair is followed by two others in Table A1
    pairs = [colour // 2 for colour in POSTTRAIN_TASK[::2]]
    assert seen.isdisjoint(zip(pairs, pairs[1:], strict=False))
