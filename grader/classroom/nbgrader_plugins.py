"""nbgrader plug-ins: keep hidden tests out of the feedback returned to learners.

nbgrader's feedback shows each graded cell's source and output (jupyter/nbgrader#917, #1363).
``HideHiddenTests`` replaces the hidden region of a test cell with a comment and cuts the
cell's error output down to its one-line message, which never contains hidden inputs.
"""

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

PLACEHOLDER = "# (hidden tests: their code is not shown)"


class HideHiddenTests(NbGraderPreprocessor):
    begin = Unicode("### BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("### END HIDDEN TESTS").tag(config=True)

    def _strip_source(self, source: str) -> tuple[str, bool]:
        kept, inside, found = [], False, False
        for line in source.splitlines():
            if self.begin in line:
                inside = found = True
                kept.append(PLACEHOLDER)
            elif self.end in line:
                inside = False
            elif not inside:
                kept.append(line)
        return "\n".join(kept), found

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        cell.source, had_hidden = self._strip_source(cell.source)
        if had_hidden:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources
