"""Research scripts, run from a checkout as `python -m experiments.<name>` (never installed)."""
