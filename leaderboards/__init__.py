"""Leaderboards: the static leaderboard site built from the run index (issue 5)."""
