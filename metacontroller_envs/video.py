"""Rendered episodes: any player in any registered env, drawn frame by frame into an mp4
or a gif. No torch: model players live in metacontroller_agents.players.

Each frame, top to bottom: a caption (env, agent, episode, step, return, outcome); the env's
own rgb_array render (for PinPad it already shows the task's colours as swatches, the
visited ones faded and the next one framed); the task line from info (PinPad: the task and
the colours visited; BabyAI: the mission and the subgoals done); and for players with a
switching unit the gate beta_t over the episode so far, each step a bar, red with a mark
above where beta_t > threshold (a new code z was drawn).

Episode k starts from reset(seed=seed + k) and its player is started with seed + k, so the
same seed gives the same video. An episode of T steps gives T + 1 frames (the reset state,
then the state after each step) and then `hold` copies of its last frame, so the outcome
stays in view between episodes. An mp4 keeps every frame; a GIF (Pillow) merges identical
consecutive frames into one longer one, so there a held frame is stored once with
(hold + 1) times the duration, in units of 1/100 s (fps 10 or 20 keep durations exact).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from metacontroller_envs.checks import check_count, check_env_id
from metacontroller_envs.evaluate import episode_success
from metacontroller_envs.experts import make_expert
from metacontroller_envs.files import write_atomically

SUFFIXES = (".mp4", ".gif")
#: Frames are at least this wide (room for the captions) and a multiple of BLOCK in both
#: sides, which mp4 encoders want.
MIN_WIDTH, BLOCK = 256, 16
FONT_SIZE = 17
MARGIN = 4
MISSION_LINES = 3  # BabyAI missions are wrapped to at most this many lines
STRIP_HEIGHT = 24  # pixels of the beta bars
MIN_COLUMN = 4  # pixels per step in the beta strip, at least
_PAPER, _INK = (255, 255, 255), (20, 20, 20)
_OUTCOME_INK = {
    "running": _INK,
    "success": (20, 140, 40),
    "failure": (200, 30, 30),
    "cut": (200, 30, 30),
}
_BAR, _SWITCH, _STRIP, _GUIDE = (90, 110, 200), (220, 40, 40), (240, 240, 240), (170, 170, 170)


# -- players: what chooses the actions (model players: metacontroller_agents.players) --


class Player(Protocol):
    """One agent playing one env, an episode at a time."""

    threshold: float | None
    """The switch threshold, for agents whose switching unit is drawn; else None."""
    max_steps: int | None
    """Episodes are cut after this many steps (a model's context), or None."""

    def start(self, env: gym.Env, seed: int) -> None:
        """A new episode has been reset with `seed`."""
        ...

    def act(self, observation: np.ndarray) -> tuple[int, float | None]:
        """The action for `observation`, and beta_t when the agent has a switching unit."""
        ...


class ExpertPlayer:
    """The env's own expert (as `mcenv expert` uses it), new and seeded each episode."""

    threshold = None
    max_steps = None

    def start(self, env: gym.Env, seed: int) -> None:
        self.expert = make_expert(env, seed=seed)

    def act(self, observation: np.ndarray) -> tuple[int, float | None]:
        return int(self.expert.act()), None


class RandomPlayer:
    """Uniform actions from the env's action space, seeded each episode."""

    threshold = None
    max_steps = None

    def start(self, env: gym.Env, seed: int) -> None:
        self.space = env.action_space
        self.space.seed(seed)

    def act(self, observation: np.ndarray) -> tuple[int, float | None]:
        return int(self.space.sample()), None


def check_suffix(out: str | Path) -> Path:
    """`out` as a Path, or a ValueError unless it ends in .mp4 or .gif."""
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--out must end in {' or '.join(SUFFIXES)}, got {str(out)!r}")
    return out


def make_env(
    env_id: str | None,
    env_kwargs: dict[str, Any] | None,
    trained_on: tuple[str, dict[str, Any]] | None,
) -> gym.Env:
    """The env to film, with render_mode="rgb_array": `env_id` (default: the checkpoint's)
    with the checkpoint's keyword arguments (e.g. task_in_obs) updated by `env_kwargs`."""
    kwargs = dict(trained_on[1]) if trained_on else {}
    if env_id is None:
        if trained_on is None:
            raise ValueError("give --env (a registered id, e.g. PinPad-v0)")
        env_id = trained_on[0]
    check_env_id(env_id)
    kwargs.update(env_kwargs or {})
    try:
        return gym.make(env_id, render_mode="rgb_array", **kwargs)
    except TypeError as error:
        message = f"{env_id} does not take the keyword arguments {kwargs}: {error}"
        raise ValueError(message) from None


# -- drawing ---------------------------------------------------------------------------------


_FONTS: dict[int, Any] = {}


def _font(size: int) -> Any:
    """pygame's default font; pygame.font needs no display, so this works headless. Fonts
    are kept per size until pygame quits (minigrid's close() calls pygame.quit(), which
    invalidates every font made before it)."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame.font

    if not pygame.font.get_init():
        pygame.font.init()
        _FONTS.clear()
    if size not in _FONTS:
        _FONTS[size] = pygame.font.Font(None, size)
    return _FONTS[size]


def line_height() -> int:
    return _font(FONT_SIZE).get_linesize() + 2


def put_text(canvas: np.ndarray, text: str, x: int, y: int, ink: tuple = _INK) -> None:
    """Draw `text` into `canvas` (H, W, 3) with its top left at (x, y), clipped."""
    if not text:
        return
    import pygame.surfarray

    surface = _font(FONT_SIZE).render(text, True, ink, _PAPER)
    image = pygame.surfarray.array3d(surface).transpose(1, 0, 2)
    height = min(image.shape[0], canvas.shape[0] - y)
    width = min(image.shape[1], canvas.shape[1] - x)
    if height > 0 and width > 0:
        canvas[y : y + height, x : x + width] = image[:height, :width]


def wrap(text: str, width: int, max_lines: int) -> list[str]:
    """`text` in lines that fit `width` pixels, at most `max_lines` (the last one ending in
    "..." when the text is longer)."""
    font = _font(FONT_SIZE)
    chars = max(8, int(width / max(1, font.size("abcdefghij")[0] / 10)))
    lines = textwrap.wrap(text, chars)
    while any(font.size(line)[0] > width for line in lines) and chars > 8:
        chars -= 2
        lines = textwrap.wrap(text, chars)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, len(lines[-1]) - 3)] + "..."
    return lines


def task_lines(info: dict[str, Any], width: int) -> list[str]:
    """The task and the progress through it, as the env's info reports them."""
    if "mission" in info:  # BabyAI
        lines = wrap(info["mission"], width, MISSION_LINES)
        lines += [""] * (MISSION_LINES - len(lines))
        return [*lines, f"subgoals done: {info['subgoal_index']}/{info['num_subgoals']}"]
    if "colours_visited" in info:  # PinPad
        task = "-".join(str(c) for c in info["task"])
        return [f"task {task}   visited {info['colours_visited']}/{len(info['task'])}"]
    if "target" in info:  # Visual Pin Pad
        pads = "-".join(str(p) for p in info["target"])
        return [f"pads {pads}   subgoal {info['subgoal_index']}   done {info['successes']}x"]
    return [f"subgoal {info['subgoal_index']}" if "subgoal_index" in info else ""]


@dataclass(frozen=True)
class Layout:
    """Where everything goes in a frame; fixed for a whole video."""

    width: int
    height: int
    grid_shape: tuple[int, int]
    task_lines: int
    strip: bool

    @classmethod
    def for_frame(cls, grid: np.ndarray, info: dict[str, Any], strip: bool) -> Layout:
        width = _round_up(max(grid.shape[1], MIN_WIDTH), BLOCK)
        rows = len(task_lines(info, width - 2 * MARGIN))
        line = line_height()
        height = 2 * line + grid.shape[0] + rows * line + 2 * MARGIN
        if strip:
            height += line + STRIP_HEIGHT + MARGIN
        return cls(width, _round_up(height, BLOCK), grid.shape[:2], rows, strip)


def _round_up(value: int, block: int) -> int:
    return -(-value // block) * block


@dataclass(frozen=True)
class FrameText:
    """What a frame says besides the picture of the env."""

    title: str  # env and agent
    episode: str  # "episode 1/3"
    step: int
    total_return: float
    outcome: str  # running, success, failure or cut (at the model's context length)


def draw_frame(
    layout: Layout,
    grid: np.ndarray,
    text: FrameText,
    info: dict[str, Any],
    betas: list[float],
    threshold: float | None,
    max_steps: int | None,
) -> np.ndarray:
    """One video frame (layout.height, layout.width, 3) uint8."""
    if grid.shape[:2] != layout.grid_shape:
        raise ValueError(f"the env's frames changed size: {grid.shape[:2]} != {layout.grid_shape}")
    canvas = np.full((layout.height, layout.width, 3), _PAPER, np.uint8)
    line, y = line_height(), MARGIN
    put_text(canvas, (wrap(text.title, layout.width - 2 * MARGIN, 1) or [""])[0], MARGIN, y)
    y += line
    status = f"{text.episode}   step {text.step}   return {text.total_return:.2f}"
    put_text(canvas, status, MARGIN, y)
    if text.outcome != "running":
        x = MARGIN + _font(FONT_SIZE).size(status + "   ")[0]
        put_text(canvas, text.outcome, x, y, _OUTCOME_INK[text.outcome])
    y += line
    left = (layout.width - grid.shape[1]) // 2
    canvas[y : y + grid.shape[0], left : left + grid.shape[1]] = grid[..., :3]
    y += grid.shape[0] + MARGIN
    for row in task_lines(info, layout.width - 2 * MARGIN)[: layout.task_lines]:
        put_text(canvas, row, MARGIN, y)
        y += line
    if layout.strip and threshold is not None:
        switches = sum(beta > threshold for beta in betas)
        put_text(canvas, f"switch gate beta   switches (beta > {threshold:g}): {switches}",
                 MARGIN, y)  # fmt: skip
        draw_betas(canvas[y + line : y + line + STRIP_HEIGHT, MARGIN:-MARGIN], betas,
                   threshold, max_steps)  # fmt: skip
    return canvas


def draw_betas(
    strip: np.ndarray, betas: list[float], threshold: float, max_steps: int | None
) -> None:
    """beta_t as bars left to right, red with a mark on top where beta_t > threshold; the
    guide line is the threshold. The newest steps stay in view on long episodes."""
    height, width = strip.shape[:2]
    strip[:] = _STRIP
    column = max(MIN_COLUMN, width // max(1, max_steps or width))
    shown = betas[-(width // column) :] if betas else []
    bar_top = 4  # the rows above the bars hold the switch marks
    strip[bar_top + round((height - bar_top) * (1 - threshold))] = _GUIDE
    for t, beta in enumerate(shown):
        x = slice(t * column, (t + 1) * column)
        top = bar_top + round((height - bar_top) * (1 - min(max(beta, 0.0), 1.0)))
        fired = beta > threshold
        strip[top:, x] = _SWITCH if fired else _BAR
        if fired:
            strip[:3, x] = _SWITCH


# -- episodes to frames to a file ------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    length: int
    total_return: float
    success: bool
    cut: bool
    """Stopped at the model's context length (counts as a failure)."""


@dataclass(frozen=True)
class RenderResult:
    path: Path
    frames: int
    fps: int
    episodes: tuple[EpisodeResult, ...]

    def line(self) -> str:
        successes = sum(e.success for e in self.episodes)
        lengths = " ".join(str(e.length) for e in self.episodes)
        return (
            f"wrote {self.path}: {len(self.episodes)} episodes (success {successes}/"
            f"{len(self.episodes)}, lengths {lengths}), {self.frames} frames at {self.fps} fps"
        )


#: With solved_only, seeds tried per episode wanted before giving up.
SOLVED_TRIES = 50


def render_frames(
    env: gym.Env,
    player: Player,
    episodes: int,
    seed: int = 0,
    hold: int = 4,
    title: str = "",
    results: list[EpisodeResult] | None = None,
    solved_only: bool = False,
) -> Iterator[np.ndarray]:
    """The frames of `episodes` episodes (episode k from reset(seed=seed + k)): T + 1 per
    episode of T steps, then `hold` copies of its last. Appends each episode's result to
    `results` when given. `solved_only`: play seeds seed, seed + 1, ... and keep only the
    episodes that succeed, until `episodes` are kept (a ValueError if none is within
    SOLVED_TRIES seeds per episode wanted)."""
    check_count("episodes", episodes)
    check_count("hold", hold, minimum=0)
    layout: Layout | None = None
    kept = 0
    for k in range(episodes * SOLVED_TRIES if solved_only else episodes):
        if kept == episodes:
            return
        episode_seed = seed + k
        observation, info = env.reset(seed=episode_seed)
        player.start(env, episode_seed)
        betas: list[float] = []
        frames: list[np.ndarray] = []
        steps, total, done, outcome = 0, 0.0, False, "running"
        while True:
            text = FrameText(title, f"episode {kept + 1}/{episodes}", steps, total, outcome)
            grid = env.render()
            if layout is None:
                layout = Layout.for_frame(grid, info, player.threshold is not None)
            frame = draw_frame(layout, grid, text, info, betas, player.threshold,
                               player.max_steps)  # fmt: skip
            frames.append(frame)
            if not solved_only:
                yield frame
            if done:
                break
            action, beta = player.act(observation)
            if beta is not None:
                betas.append(beta)
            observation, reward, terminated, truncated, info = env.step(action)
            steps, total = steps + 1, total + float(reward)
            ended = terminated or truncated
            cut = not ended and player.max_steps is not None and steps >= player.max_steps
            done = ended or cut
            if done:
                success = episode_success(info)
                outcome = "success" if success else "cut" if cut else "failure"
        if solved_only and not success:
            continue
        kept += 1
        if solved_only:
            yield from frames
        for _ in range(hold):
            yield frame
        if results is not None:
            results.append(EpisodeResult(episode_seed, steps, total, success, cut))
    if solved_only and kept == 0:
        raise ValueError(
            f"no episode succeeded in {episodes * SOLVED_TRIES} seeds from {seed}: "
            "nothing to film with solved_only"
        )


def write_video(frames: Iterator[np.ndarray], path: str | Path, fps: int) -> int:
    """Write `frames` to `path` (.mp4 via ffmpeg, .gif via Pillow, looping), atomically;
    returns how many frames were written."""
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise ValueError(
            "writing videos needs imageio: pip install 'metacontroller-envs[video]'"
        ) from None

    path = check_suffix(path)
    count = 0

    def write(temp: str) -> None:
        nonlocal count
        if path.suffix.lower() == ".gif":
            writer = imageio.get_writer(temp, format="GIF", duration=1000 / fps, loop=0)
        else:
            writer = imageio.get_writer(temp, format="FFMPEG", fps=fps, macro_block_size=BLOCK)
        with writer:
            for frame in frames:
                writer.append_data(frame)
                count += 1

    write_atomically(path, write)
    return count


def film(
    env: gym.Env,
    player: Player,
    out: str | Path,
    episodes: int = 1,
    seed: int = 0,
    fps: int = 10,
    hold: int = 4,
    title: str = "",
    solved_only: bool = False,
) -> RenderResult:
    """Film `player` for `episodes` episodes of `env` (made with render_mode="rgb_array")
    into `out` (.mp4 or .gif), atomically; `solved_only`: successful episodes only."""
    out = check_suffix(out)
    check_count("fps", fps)
    results: list[EpisodeResult] = []
    frames = render_frames(env, player, episodes, seed, hold, title, results, solved_only)
    count = write_video(frames, out, fps)
    return RenderResult(out, count, fps, tuple(results))
