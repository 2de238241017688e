"""The result of a check: pass/fail, points, and feedback as text, Markdown or HTML."""

import html
from dataclasses import dataclass, field


@dataclass
class CaseReport:
    label: str
    passed: bool
    problem: str = ""


class CheckFailed(AssertionError):
    """Raised by ``assert_passed``; Jupyter shows just the feedback instead of a long traceback."""

    def _render_traceback_(self):
        return [f"\x1b[0;31mCheckFailed\x1b[0m: {line}" if i == 0 else line
                for i, line in enumerate(str(self).splitlines())]


@dataclass
class CheckResult:
    name: str
    signature: str
    possible: int
    cases: list = field(default_factory=list)
    status: str = ""  # "passed", "failed" or "not implemented"
    origin: str = ""  # where the function came from (a notebook path), if not in-process

    def __post_init__(self):
        if not self.status:
            self.status = "passed" if self.cases and all(c.passed for c in self.cases) else "failed"

    @classmethod
    def not_implemented(cls, exercise, origin: str = ""):
        return cls(exercise.name, exercise.signature, exercise.points, [], "not implemented", origin)

    @classmethod
    def error(cls, exercise, problem: str, origin: str = ""):
        """A result for a function that could not be run at all (missing, crashed its process)."""
        return cls(exercise.name, exercise.signature, exercise.points,
                   [CaseReport("loading your function", False, problem)], "failed", origin)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def points(self) -> tuple:
        """(earned, possible): all or nothing, like the nbgrader cell that holds the check."""
        return (self.possible if self.passed else 0, self.possible)

    @property
    def n_passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def summary(self) -> str:
        if self.status == "not implemented":
            return "not implemented yet"
        if self.passed:
            return f"passed all {len(self.cases)} cases"
        return f"failed: {self.n_passed} of {len(self.cases)} cases passed"

    @property
    def feedback(self) -> str:
        """Plain text: what was tried, what was expected, what was wrong."""
        head = f"{self.name}{self.signature}: {self.summary}"
        if self.status == "not implemented":
            return (f"{head}\n  {self.name} still raises NotImplementedError: replace the line "
                    f"`raise NotImplementedError()` with your code, then run this check again.")
        lines = [head]
        for c in self.cases:
            lines.append(f"  {'PASS' if c.passed else 'FAIL'}  {c.label}")
            for detail in c.problem.splitlines():
                lines.append(f"        {detail}")
        return "\n".join(lines)

    def first_problem(self) -> str:
        """The first failing case's problem, one line (for tables)."""
        if self.status == "not implemented":
            return "not implemented yet"
        for c in self.cases:
            if not c.passed:
                return f"{c.label}: {c.problem.splitlines()[0] if c.problem else ''}"
        return ""

    def assert_passed(self):
        """Return self when passed; else raise AssertionError (the feedback is its message)."""
        if not self.passed:
            raise CheckFailed(self.feedback)
        return self

    def __str__(self):
        return self.feedback

    def __repr__(self):
        return self.feedback

    def _repr_markdown_(self):
        icon = {"passed": "✅", "failed": "❌", "not implemented": "⏳"}[self.status]
        lines = [f"{icon} **`{self.name}`** {self.summary} ({self.points[0]}/{self.points[1]} points)", ""]
        if self.status == "not implemented":
            lines.append("Replace `raise NotImplementedError()` with your code, then run this check again.")
        for c in self.cases:
            lines.append(f"- {'✅' if c.passed else '❌'} {c.label}")
            for detail in c.problem.splitlines():
                lines.append(f"    {detail}  ")
        return "\n".join(lines)

    def _repr_html_(self):
        color = {"passed": "#1a7f37", "failed": "#cf222e", "not implemented": "#9a6700"}[self.status]
        rows = "".join(
            f"<tr><td style='color:{'#1a7f37' if c.passed else '#cf222e'}'>{'✔' if c.passed else '✘'}</td>"
            f"<td>{html.escape(c.label)}</td>"
            f"<td><pre style='margin:0;white-space:pre-wrap'>{html.escape(c.problem)}</pre></td></tr>"
            for c in self.cases)
        extra = ("<p>Replace <code>raise NotImplementedError()</code> with your code, then run this "
                 "check again.</p>" if self.status == "not implemented" else "")
        table = f"<table>{rows}</table>" if rows else ""
        return (f"<div style='border-left:4px solid {color};padding-left:8px'>"
                f"<b style='color:{color}'>{html.escape(self.name)}</b>"
                f"<code>{html.escape(self.signature)}</code>: {html.escape(self.summary)} "
                f"({self.points[0]}/{self.points[1]} points){extra}{table}</div>")
