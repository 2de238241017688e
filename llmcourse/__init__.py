"""Support package for the LLM course: models and data with offline defaults, run modes, the CLI."""

from llmcourse.runmode import is_quick, pick, announce_mode

__all__ = ["is_quick", "pick", "announce_mode"]
