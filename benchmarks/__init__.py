"""Benchmark scripts: throughput now; the leaderboard and renderer come with the agent."""
