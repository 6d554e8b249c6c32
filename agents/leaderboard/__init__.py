"""The leaderboard (`mcenv bench`): every agent on every environment under one fixed
protocol. By job: protocol (profiles, seeds, cells; the protocol itself is described
there), pretraining (the shared base model and MetaController per family and seed), rows
(one adapter per algorithm), runner (runs the cells), report (the table and curves) and
cli (the command line)."""

from metacontroller_agents.leaderboard.cli import add_command

__all__ = ["add_command"]
