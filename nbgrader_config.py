"""nbgrader configuration: solutions/ is the source, exercises/ the release."""

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import GetGrades

from grader.classroom.nbgrader_plugins import HideHiddenTests

c = get_config()  # noqa: F821  (injected by nbgrader)

c.CourseDirectory.course_id = "llmcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
# hidden_checks.py stays in the instructor's tree: grader.hidden finds it there at autograde time
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "hidden_checks.py"]

c.Execute.timeout = 120  # seconds per cell: a submission that loops fails that cell, not the class
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
