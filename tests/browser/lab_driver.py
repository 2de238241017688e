"""Driving a JupyterLab notebook the way a person does: open it, run cells, type code, read the page.

Known quirks: cells render only once the kernel is idle, so wait for a cell's own text; a re-run cell
already shows a number in its prompt, so wait for the prompt to change; type code with
``keyboard.insert_text`` (``type`` would auto-indent and close brackets); open URLs with ``?reset`` so a
saved layout is not restored.
"""

import json
import re
import time

PROMPT = re.compile(r"\[(\d+|\*| )\]")


class Notebook:
    def __init__(self, page, server, path: str):
        self.page, self.server, self.path = page, server, path

    def open(self) -> "Notebook":
        self.page.goto(f"{self.server.url}/lab/tree/{self.path}?reset&token={self.server.token}")
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
        self.wait_idle()
        return self

    @property
    def cells(self):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")

    def wait_idle(self, timeout_s: float = 180) -> None:
        """Until the status bar says the kernel is idle."""
        self.page.wait_for_function("() => /\\| Idle/.test(document.querySelector('.jp-StatusBar-Widget')?.innerText"
                                    " ?? '')", timeout=timeout_s * 1000)

    def index_of(self, text: str) -> int:
        """The first cell whose source contains ``text``."""
        for i in range(self.cells.count()):
            if text in self.cells.nth(i).locator(".jp-InputArea").inner_text():
                return i
        raise LookupError(f"no cell of {self.path} contains {text!r}")

    def prompt(self, index: int) -> str:
        return self.cells.nth(index).locator(".jp-InputPrompt").inner_text().strip()

    def set_source(self, index: int, code: str) -> None:
        editor = self.cells.nth(index).locator(".cm-content")
        editor.click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.press("Delete")
        self.page.keyboard.insert_text(code)
        self.page.keyboard.press("Escape")  # back to command mode

    def run(self, index: int, timeout_s: float = 180) -> str:
        """Run one cell and wait until its prompt shows a new execution number; return its output text."""
        before = self.prompt(index)
        self.cells.nth(index).locator(".jp-InputArea").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+Enter")
        deadline = time.monotonic() + timeout_s
        while True:
            now = self.prompt(index)
            if now != before and "*" not in now and re.search(r"\d", now):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"cell {index} of {self.path} did not finish (prompt {now!r})")
            time.sleep(0.2)
        return self.output(index)

    def output(self, index: int) -> str:
        area = self.cells.nth(index).locator(".jp-OutputArea")
        return area.inner_text() if area.count() else ""

    def run_all(self, timeout_s: float = 300) -> None:
        """Run > Run All Cells, then wait until every code cell with code shows an execution number in the
        saved file (the empty cells for a learner's guesses never run). The page alone cannot say: a cell whose
        input is collapsed shows no prompt, and the kernel is briefly idle between two queued cells."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        deadline = time.monotonic() + timeout_s
        while True:
            prompts = self.page.evaluate(
                "() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell'))"
                ".map(c => c.querySelector('.jp-InputPrompt')?.innerText.trim() ?? null)")
            # "[*]:" queued or running; the unrun guesses show "[ ]:" but never "[*]:"
            if prompts and not any(p == "[*]:" for p in prompts if p is not None):
                self.wait_idle()
                self.save()
                unrun = self.unrun_cells()
                if not unrun:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: not every cell ran: {prompts}")
            time.sleep(0.5)

    def unrun_cells(self) -> list[int]:
        """Indices (among all cells) of the saved file's code cells that have code but no execution number."""
        cells = json.loads((self.server.root / self.path).read_text())["cells"]
        return [i for i, c in enumerate(cells) if c["cell_type"] == "code" and "".join(c["source"]).strip()
                and not c.get("execution_count")]

    def save(self, expect: str | None = None, attempts: int = 3) -> None:
        """Save with Ctrl+S, until the file on disk contains ``expect`` (a keypress can be lost under load)."""
        for _ in range(attempts):
            self.cells.first.click()  # focus the notebook, so the shortcut reaches it
            self.page.keyboard.press("Escape")
            self.page.keyboard.press("Control+s")
            self.page.wait_for_function("() => !document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"
                                        "?.classList.contains('jp-mod-dirty')")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if expect is None or expect in (self.server.root / self.path).read_text():
                    return
                time.sleep(0.5)
        raise AssertionError(f"{self.path}: saved {attempts} times, but the file does not contain {expect!r}")
