"""The result of a check: pass/fail, points, named mistakes as data, and feedback as text or HTML.

The report is short on purpose: the named mistake once at the top, with how many cases it explains,
then at most ``SHOWN_FAILURES`` failing cases in detail and a count of the rest. ``details`` keeps
every case (and the notebook view folds it into an expandable section).
"""

import html
from collections import Counter
from dataclasses import dataclass, field

SHOWN_FAILURES = 3


@dataclass
class CaseReport:
    label: str
    passed: bool
    problem: str = ""
    mistake: str | None = None  # the named mistake this case's output matches, as data


class CheckFailed(AssertionError):
    """Raised by ``assert_passed``; Jupyter shows just the feedback instead of a long traceback."""

    def _render_traceback_(self):
        return [f"\x1b[0;31mCheckFailed\x1b[0m: {line}" if i == 0 else line
                for i, line in enumerate(str(self).splitlines())]


def mistake_lines(mistakes: dict, n_cases: int) -> list[str]:
    """``Likely mistake: ... (k of n cases)``, one line per named mistake, most frequent first."""
    return [f"Likely mistake: {m} ({k} of {n_cases} case{'s' * (n_cases != 1)})" for m, k in mistakes.items()]


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
    def failures(self) -> list:
        return [c for c in self.cases if not c.passed]

    @property
    def mistakes(self) -> dict[str, int]:
        """Named mistake -> number of failing cases it explains, most frequent first."""
        return dict(Counter(c.mistake for c in self.failures if c.mistake).most_common())

    @property
    def summary(self) -> str:
        if self.status == "not implemented":
            return "not implemented yet"
        if self.passed:
            return f"passed all {len(self.cases)} cases"
        return f"failed: {self.n_passed} of {len(self.cases)} cases passed"

    def _head(self) -> str:
        return f"{self.name}{self.signature}: {self.summary}"

    def _not_implemented_text(self) -> str:
        return (f"{self._head()}\n  {self.name} still raises NotImplementedError: replace the line "
                f"`raise NotImplementedError()` with your code, then run this check again.")

    @staticmethod
    def _case_lines(case: CaseReport, with_mistake: bool) -> list[str]:
        lines = [f"  {'PASS' if case.passed else 'FAIL'}  {case.label}"]
        lines += [f"        {detail}" for detail in case.problem.splitlines()]
        if with_mistake and case.mistake:
            lines.append(f"        Likely mistake: {case.mistake}")
        return lines

    @property
    def feedback(self) -> str:
        """The short report: the named mistake once, three failing cases, a count of the rest."""
        if self.status == "not implemented":
            return self._not_implemented_text()
        lines = [self._head()]
        lines += [f"  {line}" for line in mistake_lines(self.mistakes, len(self.cases))]
        failures = self.failures
        groups: dict[str, list] = {}  # the same problem in several cases is shown once
        for case in failures:
            groups.setdefault(case.problem, []).append(case.label)
        shown = 0
        for problem, labels in list(groups.items())[:SHOWN_FAILURES]:
            lines.append(f"  FAIL  {labels[0]}" + (f" (and {len(labels) - 1} more with the same problem)"
                                                   if len(labels) > 1 else ""))
            lines += [f"        {detail}" for detail in problem.splitlines()]
            shown += len(labels)
        if len(failures) > shown:
            rest = len(failures) - shown
            lines.append(f"  ... and {rest} more failing case{'s' * (rest != 1)} (result.details lists every case)")
        passed = [c.label for c in self.cases if c.passed]
        if passed and failures:
            lines.append(f"  passed {len(passed)}: " + "; ".join(passed))
        elif passed:
            lines += [f"  PASS  {label}" for label in passed]
        return "\n".join(lines)

    @property
    def details(self) -> str:
        """Every case, passed or failed, with its problem and its named mistake."""
        if self.status == "not implemented":
            return self._not_implemented_text()
        lines = [self._head()]
        for case in self.cases:
            lines += self._case_lines(case, with_mistake=True)
        return "\n".join(lines)

    def headline(self) -> str:
        """One line for tables: the most frequent named mistake, else the first failing case's problem."""
        if self.status == "not implemented":
            return "not implemented yet"
        if self.mistakes:
            return f"Likely mistake: {next(iter(self.mistakes))}"
        for case in self.failures:
            return f"{case.label}: {case.problem.splitlines()[0] if case.problem else ''}"
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
        lines += [f"**{line}**" for line in mistake_lines(self.mistakes, len(self.cases))]
        for c in self.failures[:SHOWN_FAILURES]:
            lines.append(f"- ❌ {c.label}")
            lines += [f"    {detail}  " for detail in c.problem.splitlines()]
        rest = len(self.failures) - SHOWN_FAILURES
        if rest > 0:
            lines.append(f"- ... and {rest} more failing case{'s' * (rest != 1)}")
        lines += [f"- ✅ {c.label}" for c in self.cases if c.passed]
        return "\n".join(lines)

    @staticmethod
    def _rows(cases) -> str:
        return "".join(
            f"<tr><td style='color:{'#1a7f37' if c.passed else '#cf222e'}'>{'✔' if c.passed else '✘'}</td>"
            f"<td>{html.escape(c.label)}</td>"
            f"<td><pre style='margin:0;white-space:pre-wrap'>{html.escape(c.problem)}"
            f"{html.escape(chr(10) + 'Likely mistake: ' + c.mistake) if c.mistake else ''}</pre></td></tr>"
            for c in cases)

    def _repr_html_(self):
        color = {"passed": "#1a7f37", "failed": "#cf222e", "not implemented": "#9a6700"}[self.status]
        parts = [f"<div style='border-left:4px solid {color};padding-left:8px'>"
                 f"<b style='color:{color}'>{html.escape(self.name)}</b>"
                 f"<code>{html.escape(self.signature)}</code>: {html.escape(self.summary)} "
                 f"({self.points[0]}/{self.points[1]} points)"]
        if self.status == "not implemented":
            parts.append("<p>Replace <code>raise NotImplementedError()</code> with your code, then run this "
                         "check again.</p>")
        parts += [f"<p><b>{html.escape(line)}</b></p>" for line in mistake_lines(self.mistakes, len(self.cases))]
        failures = self.failures
        shown = failures[:SHOWN_FAILURES] if failures else self.cases
        if shown:
            parts.append(f"<table>{self._rows(shown)}</table>")
        if len(failures) > SHOWN_FAILURES:
            parts.append(f"<p>... and {len(failures) - SHOWN_FAILURES} more failing cases.</p>")
        if failures and self.cases:
            parts.append(f"<details><summary>All {len(self.cases)} cases</summary>"
                         f"<table>{self._rows(self.cases)}</table></details>")
        parts.append("</div>")
        return "".join(parts)
