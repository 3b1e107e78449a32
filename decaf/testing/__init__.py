"""Helpers for testing layers: the shared gradient checker and the golden-data replayer."""
