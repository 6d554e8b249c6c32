"""Pretrained agents shipped with the package, so a user drives the envs without training.

Each file in weights/ is an ordinary checkpoint (read with torch's weights-only loader,
so loading runs no pickled code) whose name is its file's stem, plus a `provenance` entry:
the command and commit that made it and a short evaluation that the tests reproduce.
Anywhere a checkpoint path is taken, `pretrained:NAME` names a shipped one:

    mcenv train internal-rl --pretrained PinPad-v0 --env PinPad-Ladder2-v0
    LatentAgent.pretrained("PinPad-v0")
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: A checkpoint argument with this prefix names a shipped file: "pretrained:PinPad-v0".
PREFIX = "pretrained:"

#: Where the shipped files lie (package data).
WEIGHTS = Path(__file__).parent / "weights"


def names() -> list[str]:
    """The shipped agents' names."""
    return sorted(path.stem for path in WEIGHTS.glob("*.pt"))


def pretrained_path(name: str) -> Path:
    """The file of shipped agent `name`, or a ValueError that lists the known names."""
    path = WEIGHTS / f"{name}.pt"
    if "/" in name or not path.is_file():
        raise ValueError(f"no pretrained agent {name!r}: shipped are {names()}")
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint argument as a file path: `pretrained:NAME` becomes the shipped file."""
    text = str(path)
    return pretrained_path(text[len(PREFIX) :]) if text.startswith(PREFIX) else Path(path)


def provenance(name: str) -> dict[str, Any]:
    """What made shipped agent `name`: command, commit, date, machine and its evaluation."""
    from metacontroller_agents.checkpoint import load_checkpoint

    payload = load_checkpoint(pretrained_path(name), ("discovery", "internal_rl"))
    if "provenance" not in payload:
        raise ValueError(f"pretrained agent {name!r} records no provenance")
    return payload["provenance"]


def add_pretrained_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """--pretrained NAME: a shipped agent (metacontroller_agents.pretrained) as --checkpoint."""
    parser.add_argument("--pretrained", default=None, metavar="NAME",
                        help=f"{what}; shipped: {', '.join(names()) or 'none'}")  # fmt: skip


def pretrained_checkpoint(args: argparse.Namespace) -> str | None:
    """--checkpoint, or `pretrained:NAME` from --pretrained; both given is an error."""
    name, checkpoint = getattr(args, "pretrained", None), getattr(args, "checkpoint", None)
    if name is None:
        return checkpoint
    if checkpoint is not None:
        raise ValueError("give --checkpoint or --pretrained, not both")
    return PREFIX + name
