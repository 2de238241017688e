"""What an exercise gives away and how hard it is (issue 21): every exercise has its hint ladder (the idea, the
plan, the usual pitfall); no exercise text, hint, check message or forbidden-call message holds a line of the
reference solution; every chapter from 04 on has an exercise worth 4+ points with 10+ solution lines whose
check names 3+ mistakes, and the last two chapters are not the easiest."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import grader.forbidden
from grader.checks import CHAPTERS
from grader.core import exercises_of
from grader.notebook import read_notebook

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = {folder.name[:2]: folder.name for folder in sorted((ROOT / "solutions").glob("[0-9][0-9]-*"))}
HINTS = ("Hint 1: the idea", "Hint 2: the plan", "Hint 3: the usual pitfall")
SHORTEST_GIVEAWAY = 15  # characters: shorter lines ("return out", "x = x.double()") are not an answer


def source_notebook(chapter: str):
    assignment = ASSIGNMENTS[chapter]
    return read_notebook(ROOT / "solutions" / assignment / f"{assignment}.ipynb")


def cells_by_id(nb) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")}


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def solution_lines(source: str) -> list[str]:
    """The code lines between BEGIN and END SOLUTION (the docstring sits above), without comments and blank
    lines."""
    body = source.split("### BEGIN SOLUTION", 1)[-1].split("### END SOLUTION", 1)[0]
    lines = []
    for line in body.splitlines():
        code = normalise(line.split("  #", 1)[0])
        if code and not code.startswith("#"):
            lines.append(code)
    return lines


def string_literals(path: Path) -> list[str]:
    """Every string constant of a Python module, f-strings' literal parts joined."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value for v in node.values if isinstance(v, ast.Constant)))
    return texts


EXERCISES = [(chapter, ex.name) for chapter in ASSIGNMENTS for ex in exercises_of(chapter)]


@pytest.mark.parametrize("chapter, name", EXERCISES)
def test_every_exercise_has_its_hint_ladder(chapter, name):
    cells = cells_by_id(source_notebook(chapter))
    hints = cells.get(f"{name}_hints")
    assert hints is not None and hints.cell_type == "markdown", f"no markdown cell `{name}_hints` in chapter {chapter}"
    summaries = re.findall(r"<details>\s*<summary>(.*?)</summary>", hints.source)
    assert summaries == list(HINTS), f"{name}'s hints: {summaries}"
    assert hints.source.count("</details>") == 3
    order = [c.metadata.get("nbgrader", {}).get("grade_id") for c in source_notebook(chapter).cells]
    assert order.index(f"{name}_intro") < order.index(f"{name}_hints") < order.index(name)


@pytest.mark.parametrize("chapter, name", EXERCISES)
def test_no_text_hint_or_message_holds_a_line_of_the_solution(chapter, name):
    nb = source_notebook(chapter)
    lines = [line for line in solution_lines(cells_by_id(nb)[name].source) if len(line) >= SHORTEST_GIVEAWAY
             and not line.startswith(("def ", "return ", "raise "))]
    places = {f"markdown cell {c.metadata.get('nbgrader', {}).get('grade_id')}": normalise(c.source)
              for c in nb.cells if c.cell_type == "markdown"}
    module = ROOT / "grader" / "checks" / f"{CHAPTERS[chapter]}.py"
    places |= {f"a string of {module.name}": normalise(text) for text in string_literals(module)}
    places |= {f"the forbidden-call message of {f.name}": normalise(f.instead)
               for f in vars(grader.forbidden).values() if isinstance(f, grader.forbidden.Forbidden)}
    found = [(line, where) for line in lines for where, text in places.items() if line in text]
    assert not found, f"{name}: solution lines given away: {found}"


def named_mistakes(chapter: str) -> dict[str, int]:
    """exercise -> how many hand-written wrong answers its chapter's tests require a named mistake for."""
    module = importlib.import_module(f"checks.test_{CHAPTERS[chapter]}")
    contract = next(cls for cls in vars(module).values() if isinstance(cls, type) and hasattr(cls, "NAMED_MISTAKES")
                    and cls.__module__ == module.__name__)
    counts: dict[str, int] = {}
    for row in contract.NAMED_MISTAKES:
        name = row.values[0] if hasattr(row, "values") else row[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


def chapter_points(chapter: str) -> dict[str, float]:
    """exercise -> its points, visible and hidden cells together."""
    points: dict[str, float] = {}
    for grade_id, cell in cells_by_id(source_notebook(chapter)).items():
        meta = cell.metadata["nbgrader"]
        if meta.get("grade"):
            name = grade_id.removeprefix("check_").removeprefix("hidden_")
            points[name] = points.get(name, 0) + meta["points"]
    return points


@pytest.mark.parametrize("chapter", [ch for ch in ASSIGNMENTS if ch >= "04"])
def test_every_chapter_from_04_has_a_hard_exercise(chapter):
    cells, points, mistakes = cells_by_id(source_notebook(chapter)), chapter_points(chapter), named_mistakes(chapter)
    hard = [name for name in points if points[name] >= 4 and len(solution_lines(cells[name].source)) >= 10
            and mistakes.get(name, 0) >= 3]
    assert hard, (f"chapter {chapter}: no exercise of 4+ points, 10+ solution lines and 3+ named mistakes: "
                  + ", ".join(f"{n} {points[n]:g} points, {len(solution_lines(cells[n].source))} lines, "
                              f"{mistakes.get(n, 0)} mistakes" for n in points))


def test_the_last_two_chapters_are_not_the_easiest():
    totals = {chapter: sum(chapter_points(chapter).values()) for chapter in ASSIGNMENTS if chapter >= "04"}
    easiest = min(totals.values())
    assert all(totals[chapter] > easiest for chapter in sorted(totals)[-2:]), totals
