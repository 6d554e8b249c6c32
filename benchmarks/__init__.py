"""Speed scripts and the leaderboard entry point, run from a checkout as
`python -m benchmarks.<name>` (never installed)."""
