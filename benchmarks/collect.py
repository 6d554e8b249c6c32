"""Time to collect expert datasets, and to load them back (a script, not a timed test).

    python benchmarks/collect.py [--pinpad-episodes 10000] [--babyai-episodes 1000]

Writes to a temporary Minari root (MINARI_DATASETS_PATH), so nothing of yours is touched.
Goal on the 2-core development machine: 10,000 PinPad-v0 episodes in <= 60 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from metacontroller_envs.registry import ids_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pinpad-episodes", type=int, default=10_000)
    parser.add_argument("--babyai-episodes", type=int, default=1000)
    args = parser.parse_args()
    babyai = ids_of("babyai")
    jobs = [("PinPad-v0", args.pinpad_episodes)] + [(i, args.babyai_episodes) for i in babyai]
    with tempfile.TemporaryDirectory() as root:
        os.environ["MINARI_DATASETS_PATH"] = root
        from metacontroller_envs.data import collect, load_episodes

        print(f"{'env':<32} {'episodes':>8} {'steps':>9} {'collect s':>10} {'load s':>8} {'MB':>7}")
        for env_id, episodes in jobs:
            start = time.perf_counter()
            dataset_id = collect(env_id, episodes, progress=False)
            collected = time.perf_counter() - start
            start = time.perf_counter()
            data = load_episodes(dataset_id)
            loaded = time.perf_counter() - start
            megabytes = (data.observations.nbytes + data.actions.nbytes) / 2**20
            print(
                f"{env_id:<32} {episodes:>8} {len(data.actions):>9} {collected:>10.1f} "
                f"{loaded:>8.1f} {megabytes:>7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
