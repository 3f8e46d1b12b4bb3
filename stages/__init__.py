"""Thin DVC stage entry points: `python -m stages.<name> …` runs the matching CLI command."""
