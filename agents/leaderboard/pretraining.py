"""The shared pretraining: expert data -> BC -> discovery, once per (family, seed).

Every row that needs a base model or a MetaController asks Bench.pretrained, which builds
it on first use under <out>/cache/pretrain/ and reuses it after.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metacontroller_agents.bc import BCConfig, train_bc
from metacontroller_agents.discovery import DiscoveryConfig, train_discovery
from metacontroller_agents.leaderboard.protocol import (
    Cell,
    Profile,
    data_seed,
    max_len,
    pretrain_env,
    read_json,
)
from metacontroller_agents.pretrained import pretrained_path, provenance
from metacontroller_envs.data.collection import collect, minari_root
from metacontroller_envs.data.episodes import open_dataset
from metacontroller_envs.files import write_atomically, write_json_atomically


@dataclass(frozen=True)
class Pretrained:
    """A family's pretraining for one seed: its checkpoints and what each stage cost (or,
    for a shipped agent, its name and provenance)."""

    bc: Path
    """The base model's checkpoint (a BC checkpoint, or the discovery checkpoint that holds
    it)."""
    discovery: Path
    record: dict[str, Any]


#: The files of a pretraining folder, in the order the stages write them.
PRETRAINING_FILES = ("pretrain.json", "bc.pt", "discovery.pt")


@dataclass
class Bench:
    """One invocation: the profile, where results and the cache go, and the device."""

    profile: Profile
    out: Path
    device: str = "auto"

    @property
    def cache(self) -> Path:
        return self.out / "cache"

    def cell_path(self, cell: Cell) -> Path:
        return self.out / "cells" / f"{cell.name}.json"

    def work(self, cell: Cell) -> Path:
        """Where a cell keeps its checkpoints (in the cache, not committed)."""
        return self.cache / "cells" / cell.name

    def pretraining_folder(self, family: str, seed: int) -> Path:
        """Where the pretraining of `family` for `seed` is cached."""
        return self.cache / "pretrain" / f"{family}-seed{seed}"

    def pretraining_seed(self, seed: int) -> int:
        """The seed whose pretraining seed `seed`'s cells use."""
        return seed if self.profile.pretrain_seed is None else self.profile.pretrain_seed

    def pretrained(self, family: str, seed: int, stage: str) -> Pretrained:
        """The pretraining of `family` for `seed` up to `stage` ("bc" or "discovery"): the
        profile's shipped agent for the family, else built on first use and cached; a cache
        made under other pretraining numbers is rebuilt."""
        name = self.profile.shipped_agent(family)
        if name is not None:
            path = pretrained_path(name)
            record = {"family": family, "seed": None, "shipped": name,
                      "provenance": provenance(name)}  # fmt: skip
            return Pretrained(path, path, record)
        seed = self.pretraining_seed(seed)
        folder = self.pretraining_folder(family, seed)
        record_path = folder / "pretrain.json"
        wanted = self.profile.pretraining()
        record = read_json(record_path)
        if not isinstance(record, dict) or record.get("protocol") != wanted:
            shutil.rmtree(folder, ignore_errors=True)
            record = {"protocol": wanted, "family": family, "seed": seed}
        p, env_id = self.profile, pretrain_env(family)
        dataset = f"{family}/{env_id}/bench-seed{seed}-v0"
        with minari_root(self.cache / "minari"):
            if "bc" not in record:
                start = time.perf_counter()
                collect(env_id, p.data_episodes, seed=data_seed(seed), dataset_id=dataset,
                        overwrite=True, progress=False)  # fmt: skip
                collected = time.perf_counter()
                config = BCConfig(
                    dataset=dataset, preset=p.preset, steps=p.bc_steps, batch_size=p.batch_size,
                    model_overrides={"max_len": max_len(family, p.envs)}, eval_every=0,
                    eval_episodes=1, checkpoint_every=p.bc_steps, seed=seed, device=self.device,
                )  # fmt: skip
                log: list[dict] = []
                with contextlib.redirect_stdout(io.StringIO()):  # its 1-episode check's line
                    train_bc(config, folder / "bc.pt", progress=False, log=log, overwrite=True)
                record["data"] = {"dataset": dataset, "episodes": p.data_episodes,
                                  "env_steps": int(open_dataset(dataset).total_steps),
                                  "seconds": collected - start}  # fmt: skip
                record["bc"] = {"steps": p.bc_steps, "seconds": time.perf_counter() - collected,
                                "action_nll": log[-1]["action_nll"]}  # fmt: skip
                write_json_atomically(record_path, record)
            if stage == "discovery" and "discovery" not in record:
                start = time.perf_counter()
                config = DiscoveryConfig(
                    base=str(folder / "bc.pt"), dataset=dataset, alpha=p.alpha,
                    kl_warmup_steps=p.kl_warmup_steps, steps=p.discovery_steps,
                    batch_size=p.batch_size, checkpoint_every=p.discovery_steps, seed=seed,
                    device=self.device,
                )  # fmt: skip
                log = []
                train_discovery(config, folder / "discovery.pt", progress=False, log=log,
                                overwrite=True)  # fmt: skip
                record["discovery"] = {
                    "steps": p.discovery_steps, "seconds": time.perf_counter() - start,
                    **{k: log[-1][k] for k in ("action_nll", "kl", "switches_per_episode")},
                }  # fmt: skip
                write_json_atomically(record_path, record)
        return Pretrained(folder / "bc.pt", folder / "discovery.pt", record)

    def pretraining_files(self, family: str, seed: int) -> dict[str, bytes]:
        """The cached pretraining of `family` for `seed` as bytes, to install on another
        machine (Ray workers need not share a disk); empty for a shipped agent."""
        if self.profile.shipped_agent(family) is not None:
            return {}
        folder = self.pretraining_folder(family, self.pretraining_seed(seed))
        return {name: (folder / name).read_bytes() for name in PRETRAINING_FILES
                if (folder / name).is_file()}  # fmt: skip

    def install_pretraining(self, family: str, seed: int, files: dict[str, bytes]) -> None:
        """Write files from pretraining_files into this machine's cache, each atomically,
        the record last (a reader sees a record only once its checkpoints are there)."""
        folder = self.pretraining_folder(family, self.pretraining_seed(seed))
        for name in sorted(files, key=lambda name: name == "pretrain.json"):
            path = folder / name
            if not path.is_file() or path.read_bytes() != files[name]:
                write_atomically(path, lambda temp, data=files[name]: Path(temp).write_bytes(data))
