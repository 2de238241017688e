"""Canvas's gradebook import (grader/classroom/canvas.py): the literal header Canvas matches assignments by, the
learners from the roster, scores in points, empty cells where nothing was graded, and clear errors."""

import pytest

from grader.classroom.canvas import CanvasConfigError, canvas_csv, canvas_settings

ROSTER = ("student_id,Student,ID,SIS User ID,SIS Login ID,Section\n"
          "ada,\"Lovelace, Ada\",101,S1,ada@uni,Mon\n"
          "grace,\"Hopper, Grace\",102,S2,grace@uni,Tue\n")
CONFIG = '''[canvas]
roster = "roster.csv"

[canvas.assignments]
"02-self-attention" = { id = 4242, name = "Exercises 02" }
"03-multi-head-attention" = 4343
'''


def test_the_header_is_canvas_s_and_empty_cells_mean_no_submission(tmp_path):
    (tmp_path / "classroom.toml").write_text(CONFIG)
    (tmp_path / "roster.csv").write_text(ROSTER)
    roster, assignments = canvas_settings(tmp_path)
    text = canvas_csv(roster, assignments, {("ada", "02-self-attention"): 12.0, ("ada", "03-multi-head-attention"): 7.5,
                                            ("grace", "02-self-attention"): 0.0})
    assert text.splitlines() == [
        "Student,ID,SIS User ID,SIS Login ID,Section,Exercises 02 (4242),03-multi-head-attention (4343)",
        '"Lovelace, Ada",101,S1,ada@uni,Mon,12,7.5',
        '"Hopper, Grace",102,S2,grace@uni,Tue,0,',  # a 0 is a score; no submission is an empty cell
    ]


@pytest.mark.parametrize("config, roster, message", [
    (None, ROSTER, "no classroom.toml"),
    ("[canvas\n", ROSTER, "does not parse"),
    ('[canvas.assignments]\n"02-self-attention" = "abc"\n', ROSTER, "needs its Canvas id"),
    ("[canvas]\n", ROSTER, "names no assignment"),
    (CONFIG, None, "roster .* is missing"),
    (CONFIG, "student_id,Student\nada,Ada\n", "lacks the columns ID"),
])
def test_what_the_export_needs_is_asked_for_plainly(tmp_path, config, roster, message):
    if config is not None:
        (tmp_path / "classroom.toml").write_text(config)
    if roster is not None:
        (tmp_path / "roster.csv").write_text(roster)
    with pytest.raises(CanvasConfigError, match=message):
        canvas_settings(tmp_path)
