"""benchmarks/oracle_codes.py's bookkeeping: the pairs an episode completed and the
pair-to-pair transitions that pretraining shows."""

import numpy as np

from benchmarks.oracle_codes import pairs_of, pretraining_transitions
from metacontroller_envs.pinpad import POSTTRAIN_TASK


def test_pairs_of_stops_at_the_first_visit_that_breaks_a_pair():
    assert pairs_of(np.array([0, 1, 4, 5, 2, -1])) == [0, 2]
    assert pairs_of(np.array([6, 7, 3, 2, 0, 1])) == [3]
    assert pairs_of(np.array([-1, -1])) == []


def test_the_post_training_transitions_are_absent_from_pretraining():
    seen = pretraining_transitions()
    assert len(seen) == 8  # each pair is followed by two others in Table A1
    pairs = [colour // 2 for colour in POSTTRAIN_TASK[::2]]
    assert seen.isdisjoint(zip(pairs, pairs[1:], strict=False))
