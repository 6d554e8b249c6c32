"""Benchmark scripts: throughput, the leaderboard (leaderboard.py) and the renderer (render.py)."""
