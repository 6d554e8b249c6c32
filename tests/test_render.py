"""Rendered episode videos (issue 7, part 2): frame counts, seeding, the switch strip, bad
input, and gymnasium's RecordVideo on the suite's rgb_array frames.

The models are tiny and random (width 32, depth 2); the MetaController's switch bias 0.5
makes it fire every few steps (see tests/test_wrappers.py).
"""

import sys
import types
from dataclasses import asdict

import gymnasium as gym
import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import metacontroller_envs  # noqa: F401
from metacontroller_agents.checkpoint import model_state, save_checkpoint
from metacontroller_agents.internal_rl import InternalRLConfig, LatentPolicy
from metacontroller_agents.metacontroller import MetaController, MetaControllerConfig
from metacontroller_agents.players import make_player
from metacontroller_agents.render import render_video
from metacontroller_agents.transformer import CausalTransformer, ModelConfig
from metacontroller_envs.cli import main
from metacontroller_envs.experts import make_expert
from metacontroller_envs.video import MIN_COLUMN, draw_betas, make_env, render_frames

TINY = {"width": 32, "depth": 2, "heads": 2, "mlp": 64}
SPEC = gym.spec("PinPad-v0").to_json()

torch.set_num_threads(1)


def tiny_base(**overrides):
    config = ModelConfig.for_env(gym.make("PinPad-v0"), "small", **{**TINY, **overrides})
    return CausalTransformer(config).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A BC, a discovery and an internal-RL checkpoint of tiny random models (PinPad-v0)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ck")
    base = tiny_base()
    save_checkpoint(folder / "bc.pt", "bc", **model_state(base), env_spec=SPEC)
    meta = MetaController(MetaControllerConfig.for_base(base.config)).eval()
    with torch.no_grad():
        meta.decoder[-1].weight.normal_(0, 0.5)
        meta.switch_output.bias.fill_(0.5)
    save_checkpoint(folder / "discover.pt", "discovery", **model_state(base),
                    controller_config=asdict(meta.config), controller=meta.state_dict(),
                    env_spec=SPEC)  # fmt: skip
    config = InternalRLConfig(checkpoint=str(folder / "discover.pt"), env="PinPad-v0",
                              episodes=8, batch_episodes=8, num_envs=8, hidden=16,
                              device="cpu")  # fmt: skip
    policy = LatentPolicy(base.config.width, meta.config.latent_dim, config.hidden)
    save_checkpoint(folder / "rl.pt", "internal_rl", train_config=asdict(config),
                    policy=policy.state_dict())  # fmt: skip
    return {name: str(folder / f"{name}.pt") for name in ("bc", "discover", "rl")}


def expected_frames(result, hold):
    """T + 1 frames per episode of T steps, then `hold` copies of its last."""
    return sum(e.length + 1 + hold for e in result.episodes)


def mp4_frames(path):
    return iio.imread(path, index=None, plugin="FFMPEG")


def frames_of(agent, checkpoint=None, seed=0, episodes=2, hold=1):
    """The frames of PinPad-v0 episodes in memory, and the episodes' results."""
    player, trained_on = make_player(agent, checkpoint)
    results = []
    env = make_env("PinPad-v0", None, trained_on)
    return list(render_frames(env, player, episodes, seed, hold, results=results)), results


def test_expert_video_has_a_frame_per_step_and_held_frames(tmp_path):
    result = render_video("PinPad-v0", "expert", tmp_path / "e.mp4", episodes=2, seed=3, hold=3)
    env = gym.make("PinPad-v0")
    for k, episode in enumerate(result.episodes):  # the expert on its own plays the same
        env.reset(seed=3 + k)
        expert, steps, done = make_expert(env, seed=3 + k), 0, False
        while not done:
            _, _, terminated, truncated, info = env.step(expert.act())
            steps, done = steps + 1, terminated or truncated
        assert (episode.length, episode.success) == (steps, True)
    frames = mp4_frames(tmp_path / "e.mp4")
    assert len(frames) == result.frames == expected_frames(result, hold=3)
    assert frames.shape[1] % 16 == 0 and frames.shape[2] % 16 == 0 and frames.shape[3] == 3


def test_gif_holds_each_episode_end_as_one_longer_frame(tmp_path):
    path = tmp_path / "b.gif"
    result = render_video("SubgoalBabyAI-Pretrain-v0", "expert", path, fps=10, hold=4)
    (episode,) = result.episodes
    assert episode.success and result.frames == episode.length + 1 + 4
    gif = iio.imread(path, index=None)
    durations = [iio.immeta(path, index=i)["duration"] for i in range(len(gif))]
    assert sum(durations) == 100 * result.frames  # every frame 1/10 s
    assert len(gif) == result.frames - 4 and durations[-1] == 500  # Pillow merges the hold


def test_bc_agent_through_the_command(checkpoints, tmp_path, capsys):
    out = tmp_path / "bc.mp4"
    command = ["render", "--agent", "bc", "--checkpoint", checkpoints["bc"], "--episodes",
               "2", "--hold", "2", "--out", str(out)]  # fmt: skip
    assert main(command) == 0
    assert f"wrote {out}: 2 episodes" in capsys.readouterr().out
    result = render_video(None, "bc", tmp_path / "again.mp4", 2, checkpoints["bc"], hold=2)
    assert len(mp4_frames(out)) == expected_frames(result, hold=2)


SWITCHING = [("metacontroller", "discover"), ("internal-rl", "rl")]


@pytest.mark.parametrize("agent,checkpoint", SWITCHING)
def test_switching_agents_draw_beta_under_the_frame(checkpoints, agent, checkpoint, tmp_path):
    result = render_video(None, agent, tmp_path / "m.mp4", 1, checkpoints[checkpoint], hold=0)
    assert len(mp4_frames(tmp_path / "m.mp4")) == expected_frames(result, hold=0)
    frames, _ = frames_of(agent, checkpoints[checkpoint], episodes=1)
    plain, _ = frames_of("random", episodes=1)
    assert frames[0].shape[0] > plain[0].shape[0]  # room for the strip
    switch_red = np.all(frames[-1] == (220, 40, 40), axis=-1)
    assert switch_red[-40:].any()  # at least the first step's switch (beta = 1) is marked


def test_beta_strip_marks_the_switches():
    strip = np.zeros((24, 100, 3), np.uint8)
    draw_betas(strip, [1.0, 0.2, 0.7], threshold=0.5, max_steps=100)
    marks = np.all(strip[0] == (220, 40, 40), axis=-1)
    column = MIN_COLUMN
    assert marks[:column].all() and not marks[column : 2 * column].any()
    assert marks[2 * column : 3 * column].all() and not marks[3 * column :].any()


@pytest.mark.parametrize("agent,checkpoint", [("bc", "bc"), ("metacontroller", "discover")])
def test_same_seed_same_frames(checkpoints, agent, checkpoint):
    first, _ = frames_of(agent, checkpoints[checkpoint], seed=5)
    again, _ = frames_of(agent, checkpoints[checkpoint], seed=5)
    assert len(first) == len(again) and all(map(np.array_equal, first, again))
    other, _ = frames_of(agent, checkpoints[checkpoint], seed=6)
    assert len(other) != len(first) or not all(map(np.array_equal, first, other))


def test_episodes_are_cut_at_the_models_context(tmp_path):
    torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "short.pt", "bc", **model_state(tiny_base(max_len=4)),
                           env_spec=SPEC)  # fmt: skip
    result = render_video(None, "bc", tmp_path / "s.gif", 4, path, hold=0)
    assert all(e.length <= 3 for e in result.episodes) and any(e.cut for e in result.episodes)
    assert all(e.length == 3 and not e.success for e in result.episodes if e.cut)
    assert result.frames == expected_frames(result, hold=0)


@pytest.mark.parametrize(
    "arguments,message",
    [
        (dict(env_id="PinPad-v9", agent="expert"), "unknown env id 'PinPad-v9'"),
        (dict(agent="wizard"), "unknown agent 'wizard'"),
        (dict(agent="expert", out="clip.avi"), "--out must end in .mp4 or .gif"),
        (dict(agent="bc"), "--agent bc needs --checkpoint"),
        (dict(agent="bc", checkpoint="missing.pt"), "no checkpoint at missing.pt"),
        (dict(agent="metacontroller", checkpoint="bc"), "holds a 'bc' run, not 'discovery'"),
        (dict(agent="expert", checkpoint="bc"), "--agent expert takes no --checkpoint"),
        (dict(agent="expert", env_id=None), "give --env"),
        (
            dict(agent="bc", checkpoint="bc", env_id="SubgoalBabyAI-Pretrain-v0"),
            "observations have shape",
        ),  # fmt: skip
        (dict(agent="expert", episodes=0), "episodes must be a positive integer"),
    ],
)
def test_bad_input_is_a_clear_error(checkpoints, tmp_path, arguments, message):
    values = {"env_id": "PinPad-v0", "out": "clip.gif", **arguments}
    values["out"] = tmp_path / values["out"]
    if values.get("checkpoint") in checkpoints:
        values["checkpoint"] = checkpoints[values["checkpoint"]]
    with pytest.raises(ValueError, match=message):
        render_video(**values)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_command_prints_bad_input(capsys):
    assert main(["render", "--env", "PinPad-v0", "--agent", "wizard", "--out", "x.gif"]) == 2
    assert "mcenv render: unknown agent 'wizard'" in capsys.readouterr().err
    command = ["render", "--env", "PinPad-v0", "--agent", "expert", "--out", "x.gif"]
    assert main([*command, "--env-kwargs", "[1]"]) == 2
    assert "--env-kwargs must be a JSON object, got [1]" in capsys.readouterr().err


@pytest.fixture
def moviepy_or_stand_in(monkeypatch):
    """gymnasium's RecordVideo writes with moviepy, which this project does not install:
    without it, a stand-in ImageSequenceClip that checks the frames as moviepy's does (one
    size, RGB uint8) and writes them with imageio-ffmpeg, as moviepy itself does."""
    try:
        import moviepy  # noqa: F401

        return
    except ImportError:
        pass

    class ImageSequenceClip:
        def __init__(self, frames, fps):
            assert len({np.shape(f) for f in frames}) == 1, "frames of different sizes"
            assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in frames)
            self.frames, self.fps = list(frames), fps

        def write_videofile(self, path, logger=None):
            imageio.mimwrite(path, self.frames, format="FFMPEG", fps=self.fps,
                             macro_block_size=1)  # fmt: skip

    modules = {name: types.ModuleType(name) for name in
               ("moviepy", "moviepy.video", "moviepy.video.io",
                "moviepy.video.io.ImageSequenceClip")}  # fmt: skip
    modules["moviepy.video.io.ImageSequenceClip"].ImageSequenceClip = ImageSequenceClip
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("env_id", ["PinPad-v0", "SubgoalBabyAI-Pretrain-v0"])
def test_record_video_records_an_episode(env_id, tmp_path, moviepy_or_stand_in):
    env = gym.wrappers.RecordVideo(
        gym.make(env_id, render_mode="rgb_array"),
        str(tmp_path / "videos"),
        episode_trigger=lambda k: True,
    )
    env.reset(seed=0)
    expert, steps, done = make_expert(env, seed=0), 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(expert.act())
        steps, done = steps + 1, terminated or truncated
    shape = env.render().shape
    env.close()
    (video,) = (tmp_path / "videos").glob("*.mp4")
    frames = mp4_frames(video)
    assert len(frames) == steps + 1 and frames.shape[1:] == shape


def test_solved_only_films_the_successes_alone():
    def play(episodes, task, solved_only):
        results: list = []
        env = make_env("PinPad-v0", {"task": task}, None)
        frames = list(render_frames(env, make_player("random")[0], episodes, 0, 0,
                                    results=results, solved_only=solved_only))  # fmt: skip
        return frames, results

    _, results = play(30, "0", solved_only=False)
    solved = [r for r in results if r.success]
    assert 0 < len(solved) < len(results)  # random play visits one colour now and then
    frames, kept = play(1, "0", solved_only=True)
    assert [r.seed for r in kept] == [solved[0].seed] and len(frames) == solved[0].length + 1
    with pytest.raises(ValueError, match="no episode succeeded"):
        play(1, "0-1-2-3-4-5-6-7", solved_only=True)


def test_frames_still_draw_after_pygame_quits():
    """minigrid's close() calls pygame.quit(), which invalidates the fonts made before it."""
    import pygame

    frames_of("random", episodes=1)
    pygame.quit()
    frames, results = frames_of("random", episodes=1)
    assert len(frames) == results[0].length + 2
