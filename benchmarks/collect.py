"""Time to collect expert datasets, and to load them back (a script, not a timed test).

    python -m benchmarks.collect [--pinpad-episodes 10000] [--babyai-episodes 1000]

Writes to a temporary Minari root (MINARI_DATASETS_PATH), so nothing of yours is touched.
Goal on the 2-core development machine: 10,000 PinPad-v0 episodes in <= 60 s.

Each time is wall seconds with this process's CPU seconds in brackets (the CPU time holds
still when other work shares the machine). "load" is `load_episodes` (the fast hdf5
reader); "public" reads the same arrays through Minari's public API
(`dataset.iterate_episodes()`); "public/fast" is the ratio of their CPU times.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from metacontroller_envs.registry import ids_of


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """fn's result, wall seconds, CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pinpad-episodes", type=int, default=10_000, help="0 skips PinPad")
    parser.add_argument("--babyai-episodes", type=int, default=1000, help="0 skips BabyAI")
    args = parser.parse_args()
    babyai = [(env_id, args.babyai_episodes) for env_id in ids_of("babyai")]
    jobs = [("PinPad-v0", args.pinpad_episodes), *babyai]
    with tempfile.TemporaryDirectory() as root:
        os.environ["MINARI_DATASETS_PATH"] = root
        from metacontroller_envs.data import collect, load_episodes, open_dataset
        from metacontroller_envs.data.episodes import _empty_columns, _read_through_minari

        def load_public(dataset_id: str) -> None:
            dataset = open_dataset(dataset_id)
            _read_through_minari(dataset, _empty_columns(dataset.spec))

        print(f"{'env':<32} {'episodes':>8} {'steps':>9} {'collect s':>14} {'load s':>13} "
              f"{'public s':>13} {'public/fast':>11} {'MB':>7}")  # fmt: skip
        for env_id, episodes in jobs:
            if episodes == 0:
                continue
            dataset_id, collect_s, collect_cpu = timed(collect, env_id, episodes, progress=False)
            data, load_s, load_cpu = timed(load_episodes, dataset_id)
            _, public_s, public_cpu = timed(load_public, dataset_id)
            megabytes = (data.observations.nbytes + data.actions.nbytes) / 2**20
            print(
                f"{env_id:<32} {episodes:>8} {len(data.actions):>9} "
                f"{collect_s:>6.1f} ({collect_cpu:>5.1f}) {load_s:>5.1f} ({load_cpu:>5.1f}) "
                f"{public_s:>5.1f} ({public_cpu:>5.1f}) {public_cpu / load_cpu:>11.2f} "
                f"{megabytes:>7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
