"""One module of checks per chapter. ``register_chapter("02")`` imports one chapter's (what ``llmcourse check 02``
needs, and all it pays for); ``register_all()`` imports every chapter's."""

import importlib

# chapter -> module, named after the chapter's folder (solutions/06-bias-and-cost/ -> bias_and_cost.py)
CHAPTERS = {"01": "transformer_era", "02": "self_attention", "03": "multi_head_attention", "04": "transfer_learning",
            "05": "gpt_and_prompting", "06": "bias_and_cost", "07": "experts_and_scale", "08": "scaling_laws",
            "09": "evaluating_llms", "10": "open_models", "11": "instruction_tuning"}


def register_chapter(chapter: str) -> None:
    """Register the checks of ``chapter`` (``"02"``); an unknown chapter has none."""
    if chapter in CHAPTERS:
        importlib.import_module(f"grader.checks.{CHAPTERS[chapter]}")


def register_all() -> None:
    for chapter in CHAPTERS:
        register_chapter(chapter)
