"""The leaderboard from a checkout, into the committed results folder.

    python -m benchmarks.leaderboard --quick      # writes docs/results/leaderboard/quick/

The options of `mcenv bench` (metacontroller_agents.leaderboard), whose results go under
the working directory by default; here they default to the repository's
docs/results/leaderboard/<profile>/, where the committed tables live.
"""

from __future__ import annotations

import sys
from pathlib import Path

from metacontroller_agents.leaderboard.cli import main

#: docs/results/leaderboard/ of this checkout, whatever the working directory.
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "leaderboard"

if __name__ == "__main__":
    sys.exit(main(results=RESULTS))
