"""What every lesson asks and how it ends (issue 22): at least three predict-then-run questions (a markdown cell
starting "**Predict:**", an empty cell for the learner's guess, then the cell that computes the answer), and a
last cell that points at the learner's copy of the exercises in the same words in every lesson."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
ENDING = ("## Now try the exercises\n\nOpen your copy of the exercises, `my-work/{slug}/{slug}.ipynb` (`make lab` made "
          "it; `llmcourse start {ch}` makes it from a terminal), and check your work with `llmcourse check {ch}`.")
PREDICTIONS = 3


def cells(lesson: Path) -> list[dict]:
    return [dict(c, source="".join(c["source"])) for c in json.loads(lesson.read_text())["cells"]]


def questions(lesson: Path) -> list[str]:
    """The predict-then-run questions: each "**Predict:**" cell followed by an empty cell and a code cell."""
    found = []
    nb = cells(lesson)
    for first, guess, answer in zip(nb, nb[1:], nb[2:]):
        if first["cell_type"] == "markdown" and first["source"].startswith("**Predict:**"):
            assert guess["cell_type"] == "code" and not guess["source"].strip(), (
                f"{lesson.name}: the cell after {first['source'][:60]!r} must be empty, for the learner's guess")
            assert answer["cell_type"] == "code" and answer["source"].strip(), (
                f"{lesson.name}: {first['source'][:60]!r} needs the cell that computes its answer after the guess")
            found.append(first["source"])
    return found


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name[:2])
def test_every_lesson_ends_pointing_at_the_learners_copy_in_the_same_words(lesson):
    slug, ch = lesson.stem, lesson.name[:2]
    last = cells(lesson)[-1]["source"]
    assert " ".join(last.split()).startswith(" ".join(ENDING.format(slug=slug, ch=ch).split())), last[:400]
    assert "`exercises/" not in last


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name[:2])
def test_every_lesson_asks_for_predictions_before_it_answers(lesson):
    assert len(questions(lesson)) >= PREDICTIONS, f"{lesson.name} asks {len(questions(lesson))} predict-then-run questions"
