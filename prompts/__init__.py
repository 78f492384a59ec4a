"""Prompt templates for the LLM fighters and judges (read with importlib.resources)."""
