"""PinPadVectorEnv: N PinPad episodes stepped as one batch over the core."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metacontroller_envs.checks import check_count, check_render_mode
from metacontroller_envs.pinpad import core
from metacontroller_envs.pinpad.core import ACTION_NAMES, PinPadBatch
from metacontroller_envs.pinpad.env import pinpad_config, pinpad_obs_layout, pinpad_spaces
from metacontroller_envs.pinpad.render import PinPadFrame, draw_pinpad


class PinPadVectorEnv(VectorEnv):
    """`num_envs` PinPad envs in one numpy batch; `gym.make_vec(id, num_envs=N)` returns it.

    Sub-env i seeded with s plays exactly the episodes of `PinPadEnv` reset with seed s
    (reset(seed=s) seeds sub-env i with s + i). Autoreset follows Gymnasium's modes: by
    default (NEXT_STEP) the step after an episode ends resets that env and ignores its action.
    Infos are arrays over the envs; for a single env's tuple `task`, here `task` is an
    (N, task_slots) array padded with -1.
    """

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 8,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        grid_size: int = 7,
        num_colours: int = 8,
        num_walls: int = 4,
        horizon: int = 100,
        task: str | Iterable[int] | None = None,
        tasks: Sequence[str | Iterable[int]] | None = None,
        task_in_obs: bool = False,
        free_play: bool = False,
        start_midway: bool = False,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        max_episode_steps: int | None = None,
    ) -> None:
        if (
            isinstance(num_envs, bool)
            or not isinstance(num_envs, (int, np.integer))
            or num_envs < 1
        ):
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        try:
            autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                f"unknown autoreset_mode {autoreset_mode!r}: use one of "
                f"{[m.value for m in AutoresetMode]}"
            ) from None
        if max_episode_steps is not None:  # gym.make_vec passes the spec's; the single env's
            check_count("max_episode_steps", max_episode_steps)  # TimeLimit cuts there too
            horizon = min(horizon, max_episode_steps)
        self.config = pinpad_config(
            grid_size,
            num_colours,
            num_walls,
            horizon,
            task,
            tasks,
            task_in_obs,
            free_play,
            start_midway,
        )
        self.num_envs = int(num_envs)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.autoreset_mode = autoreset_mode
        self.copy = copy
        self.single_observation_space, self.single_action_space = pinpad_spaces(self.config)
        self.obs_layout = pinpad_obs_layout(self.config)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.batch = PinPadBatch(self.config, self.num_envs)
        self._base_keys = np.zeros(self.num_envs, dtype=np.uint64)
        self._episode = np.full(self.num_envs, -1, dtype=np.int64)
        self._seeded = False
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._all = np.ones(self.num_envs, dtype=bool)
        self._all.flags.writeable = False

    # -- episodes ---------------------------------------------------------------------

    def _start_episodes(self, env_ids: np.ndarray) -> None:
        self._episode[env_ids] += 1
        keys = core.episode_keys(self._base_keys[env_ids], self._episode[env_ids])
        self.batch.load(env_ids, core.sample_layouts(self.config, keys))
        self._needs_reset[env_ids] = False

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds: list[int | None] = [int(seed) + i for i in range(self.num_envs)]
        elif seed is None:
            seeds = [None] * self.num_envs
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        mask = self._all
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"reset_mask must be a bool array of shape ({self.num_envs},), "
                    f"got {mask.dtype} {mask.shape}"
                )
        for i in np.nonzero(mask)[0]:
            if seeds[i] is not None or not self._seeded:
                rng, _ = seeding.np_random(seeds[i])
                self._base_keys[i] = core.base_key_from_rng(rng)
                self._episode[i] = -1
        self._seeded = True
        self._start_episodes(np.nonzero(mask)[0])
        return self._observations(), self._infos()

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = self._check_actions(actions)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = np.nonzero(self._needs_reset)[0]
            reward, terminated, truncated = self.batch.step(actions)
            if len(restart):
                self._start_episodes(restart)
                reward[restart], terminated[restart], truncated[restart] = 0.0, False, False
            self._needs_reset = terminated | truncated
            return self._observations(), reward, terminated, truncated, self._infos()

        reward, terminated, truncated = self.batch.step(actions)
        infos = self._infos()
        done = np.nonzero(terminated | truncated)[0]
        if self.autoreset_mode == AutoresetMode.SAME_STEP and len(done):
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in done:
                final_obs[i] = self.batch.obs[i].copy()
            ended = np.zeros(self.num_envs, dtype=bool)
            ended[done] = True
            final_info = {key: value for key, value in infos.items() if not key.startswith("_")}
            final_info.update({f"_{key}": ended for key in list(final_info)})
            self._start_episodes(done)
            infos = self._infos()
            infos.update(
                final_obs=final_obs, _final_obs=ended, final_info=final_info, _final_info=ended
            )
        return self._observations(), reward, terminated, truncated, infos

    def _check_actions(self, actions: Any) -> np.ndarray:
        array = np.asarray(actions)
        n = len(ACTION_NAMES)
        if array.shape != (self.num_envs,) or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},), got "
                f"{array.dtype} {array.shape}; actions are 0..{n - 1} ({', '.join(ACTION_NAMES)})"
            )
        if array.min() < 0 or array.max() >= n:
            bad = array[(array < 0) | (array >= n)]
            raise ValueError(
                f"invalid action(s) {bad[:8].tolist()}: actions are integers 0..{n - 1}"
            )
        return array

    # -- outputs ----------------------------------------------------------------------

    def _observations(self) -> np.ndarray:
        return self.batch.obs.copy() if self.copy else self.batch.obs

    def _infos(self) -> dict[str, Any]:
        b = self.batch
        infos = {
            "task": b.task[:, :-1].copy(),
            "task_index": b.task_index.copy(),
            "subgoal_index": b.subgoal_index,
            "next_colour": b.next_colour,
            "colours_visited": b.progress.copy(),
            "success": b.success.copy(),
        }
        infos.update({f"_{key}": self._all for key in list(infos)})
        return infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode: pass render_mode to make_vec()")
            return None
        return tuple(
            draw_pinpad(PinPadFrame.from_batch(self.batch, i)) for i in range(self.num_envs)
        )
