"""One module of checks per chapter. ``register_chapter("02")`` imports one chapter's (what ``llmcourse check 02``
needs, and all it pays for); ``register_all()`` imports every chapter's."""

import importlib

CHAPTERS = {"01": "scale", "02": "attention", "03": "blocks", "04": "transfer", "05": "decoding", "06": "bias",
            "07": "experts", "08": "scaling", "09": "evaluation", "10": "open_models"}


def register_chapter(chapter: str) -> None:
    """Register the checks of ``chapter`` (``"02"``); an unknown chapter has none."""
    if chapter in CHAPTERS:
        importlib.import_module(f"grader.checks.{CHAPTERS[chapter]}")


def register_all() -> None:
    for chapter in CHAPTERS:
        register_chapter(chapter)
