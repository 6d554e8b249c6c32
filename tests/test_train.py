"""Behaviour cloning, checkpoints, resume, evaluation and the agent's commands."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import CrashAfter

from metacontroller_agents.bc import BCConfig, bc_loss, train_bc
from metacontroller_agents.checkpoint import load_checkpoint, load_model, save_checkpoint
from metacontroller_agents.data import to_torch
from metacontroller_agents.disco_agent import DiscoConfig
from metacontroller_agents.discovery import DiscoveryConfig
from metacontroller_agents.evaluate import evaluate_model
from metacontroller_agents.evolution import EvolutionConfig
from metacontroller_agents.internal_rl import InternalRLConfig
from metacontroller_agents.runs import load_config
from metacontroller_envs.cli import main
from metacontroller_envs.data import collect, load_episodes

TINY = {"width": 32, "depth": 2, "heads": 2, "mlp": 64}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        dataset_id = collect("PinPad-v0", 8, progress=False)
        yield dataset_id


def config(dataset, **overrides):
    values = dict(dataset=dataset, model_overrides=TINY, steps=4, batch_size=4, eval_every=0,
                  eval_episodes=4, device="cpu", warmup_steps=2)  # fmt: skip
    return BCConfig(**{**values, **overrides})


def test_overfits_a_tiny_dataset(dataset, tmp_path):
    log = []
    cfg = config(dataset, steps=150, batch_size=8, lr=3e-3, warmup_steps=10, obs_loss_weight=0)
    train_bc(cfg, tmp_path / "bc.pt", progress=False, log=log)
    assert log[0]["action_nll"] > 1.0
    assert log[-1]["action_nll"] < 0.1 and log[-1]["accuracy"] > 0.97
    assert 0.0 <= log[-1]["success"] <= 1.0 and "free_play" in log[-1]


def test_presets_and_the_token_loss(dataset, tmp_path):
    small, paper = BCConfig(dataset=dataset), BCConfig(dataset=dataset, preset="paper")
    assert (small.lr, small.steps, paper.lr) == (2e-3, 6000, 3e-4)
    assert BCConfig(dataset=dataset, lr=1e-4).lr == 1e-4
    model, _ = load_model(train_bc(config(dataset, steps=1), tmp_path / "t.pt", progress=False))
    batch = to_torch(load_episodes(dataset).padded(np.arange(2)))
    out = model(batch["observations"][:, :-1], model.previous_actions(batch["actions"]))
    plain, metrics = bc_loss(model, out, batch, obs_weight=0.0)
    both, metrics = bc_loss(model, out, batch, obs_weight=0.0, token_weight=0.5)
    assert "token_nll" in metrics
    torch.testing.assert_close(both, plain + 0.5 * metrics["token_nll"], rtol=1e-5, atol=1e-5)


def test_checkpoint_round_trip(dataset, tmp_path):
    path = train_bc(config(dataset), tmp_path / "bc.pt", progress=False)
    model, payload = load_model(path)
    again, _ = load_model(path)
    data = load_episodes(dataset)
    batch = data.padded(np.arange(3))
    obs = torch.as_tensor(batch.observations[:, :-1])
    prev = model.previous_actions(torch.as_tensor(batch.actions))
    with torch.no_grad():
        torch.testing.assert_close(model(obs, prev).action, again(obs, prev).action, rtol=0, atol=0)
    assert payload["step"] == 4 and payload["train_config"]["dataset"] == dataset
    assert json.loads(payload["env_spec"])["id"] == "PinPad-v0"


def test_resume_equals_an_uninterrupted_run(dataset, tmp_path):
    whole = train_bc(config(dataset, steps=6), tmp_path / "whole.pt", progress=False)
    first = config(dataset, steps=6, checkpoint_every=3)
    part = tmp_path / "part.pt"
    original = save_checkpoint  # stop after the step-3 checkpoint, as a crash would

    class Stop(Exception):
        pass

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        if kwargs["step"] == 3:
            raise Stop

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("metacontroller_agents.runs.save_checkpoint", save_then_stop)
        with pytest.raises(Stop):
            train_bc(first, part, progress=False)
    assert load_checkpoint(part, "bc")["step"] == 3
    train_bc(first, part, resume=True, progress=False)
    a, b = load_checkpoint(whole, "bc"), load_checkpoint(part, "bc")
    assert b["step"] == 6
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="different config"):
        train_bc(config(dataset, steps=7), part, resume=True, progress=False)
    with pytest.raises(ValueError, match="part.pt exists: pass resume=True"):
        train_bc(first, part, progress=False)
    train_bc(config(dataset, steps=1), part, overwrite=True, progress=False)
    assert load_checkpoint(part, "bc")["step"] == 1


def test_resume_may_change_only_the_resume_free_fields(dataset, tmp_path):
    whole = train_bc(config(dataset), tmp_path / "whole.pt", progress=False)
    part = tmp_path / "part.pt"
    log = CrashAfter(3)  # killed in step 3, after the checkpoint of step 2
    with pytest.raises(KeyboardInterrupt):
        train_bc(config(dataset, checkpoint_every=2), part, progress=False, log=log)
    assert load_checkpoint(part, "bc")["step"] == 2
    # another device string, evaluation and checkpoint cadence: the same run goes on
    moved = config(dataset, device="auto", eval_every=1, eval_episodes=2, checkpoint_every=1)
    train_bc(moved, part, resume=True, progress=False)
    a, b = load_checkpoint(whole, "bc"), load_checkpoint(part, "bc")
    assert b["step"] == 4
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match=r"different config: lr: 0\.002 saved, 0\.01 now \(only"):
        train_bc(config(dataset, lr=0.01), part, resume=True, progress=False)



@pytest.mark.parametrize(
    "cls", [BCConfig, DiscoveryConfig, InternalRLConfig, EvolutionConfig, DiscoConfig]
)
def test_resume_free_fields_are_fields(cls):
    assert cls.RESUME_FREE and cls.RESUME_FREE <= {f.name for f in dataclasses.fields(cls)}
    assert "device" in cls.RESUME_FREE and "lr" not in cls.RESUME_FREE


def test_evaluation_reports_free_play_for_hidden_tasks(dataset, tmp_path):
    model, _ = load_model(train_bc(config(dataset), tmp_path / "bc.pt", progress=False))
    report = evaluate_model(model, "PinPad-v0", 20, num_envs=8, seed=3)
    assert report.episodes == 20 and 0 <= report.successes <= 20
    assert report.free_play_successes is not None and "free play" in report.line()
    again = evaluate_model(model, "PinPad-v0", 20, num_envs=8, seed=3)
    assert (again.successes, again.mean_length) == (report.successes, report.mean_length)


def test_bad_input(dataset, tmp_path):
    with pytest.raises(ValueError, match="unknown BCConfig fields \\['stepz'\\]"):
        load_config(BCConfig, None, dataset=dataset, stepz=3)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_config(BCConfig, bad)
    with pytest.raises(ValueError, match="unknown model fields"):
        config(dataset, model_overrides={"layers": 3})
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        config(dataset, steps=0)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt is corrupt or not a torch file"):
        load_model(junk)
    with pytest.raises(ValueError, match="no checkpoint at"):
        load_model(tmp_path / "missing.pt")
    other = save_checkpoint(tmp_path / "other.pt", "metacontroller", step=0)
    with pytest.raises(ValueError, match="holds a 'metacontroller' run, not 'bc'"):
        load_model(other)
    with pytest.raises(ValueError, match="holds a 'metacontroller' run, not 'bc' or 'disco'"):
        load_checkpoint(other, ("bc", "disco"))
    assert load_checkpoint(other, ("bc", "metacontroller"))["step"] == 0
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a metacontroller-envs checkpoint"):
        load_model(tmp_path / "foreign.pt")


def test_train_and_eval_commands(dataset, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    cfg = tmp_path / "bc.json"
    cfg.write_text(json.dumps({k: v for k, v in dataclasses.asdict(config(dataset)).items()}))
    assert main(["train", "bc", "--config", str(cfg), "--steps", "2", "--out", str(out)]) == 0
    assert load_checkpoint(out, "bc")["step"] == 2
    assert main(["eval", "--checkpoint", str(out), "--episodes", "4", "--device", "cpu"]) == 0
    assert "PinPad-v0: success" in capsys.readouterr().out
    code = main(["eval", "--checkpoint", str(out), "--env", "SubgoalBabyAI-Pretrain-v0"])
    assert code == 2 and "observations have shape (242,)" in capsys.readouterr().err
    code = main(["eval", "--checkpoint", str(out), "--env", "PinPad-v9"])
    assert code == 2 and "unknown env id 'PinPad-v9'" in capsys.readouterr().err
    code = main(["train", "bc", "--dataset", "pinpad/nothing-v0", "--out", str(tmp_path / "n.pt")])
    assert code == 2 and "unknown dataset 'pinpad/nothing-v0'" in capsys.readouterr().err


def test_snapshots_keep_the_checkpoints_of_every_nth_step(dataset, tmp_path):
    path = tmp_path / "bc.pt"
    train_bc(config(dataset, steps=4, checkpoint_every=1, snapshot_every=2), path,
             progress=False)  # fmt: skip
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name != "bc.pt")
    assert kept == ["bc.step2.pt", "bc.step4.pt"]
    assert load_checkpoint(tmp_path / "bc.step2.pt", "bc")["step"] == 2
    with pytest.raises(ValueError, match="snapshot_every .3. must be a multiple"):
        config(dataset, checkpoint_every=2, snapshot_every=3)


def test_speed_and_snapshot_options_may_change_on_resume(dataset, tmp_path):
    assert {"compile", "snapshot_every", "device"} <= BCConfig.RESUME_FREE
    path = tmp_path / "bc.pt"
    with pytest.raises(KeyboardInterrupt):
        train_bc(config(dataset, steps=4, checkpoint_every=2), path, progress=False,
                 log=CrashAfter(3))  # fmt: skip
    train_bc(config(dataset, steps=4, checkpoint_every=2, compile=False, snapshot_every=2),
             path, resume=True, progress=False)  # fmt: skip
    assert load_checkpoint(path, "bc")["step"] == 4
