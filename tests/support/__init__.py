"""Helpers shared by several test files (pytest fixtures live in conftest.py)."""
