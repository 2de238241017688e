"""Execute notebooks headless (nbclient): used by the tests (quick mode) and ``make course`` (full mode).

``python -m llmcourse.run_notebooks [--quick] [paths...]`` executes every lesson and reference
solution (or the given ones) and prints a table of times and peak memory (the kernel's peak
resident set size, which is what a learner's laptop must hold).
"""

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nbclient
import nbformat
from nbformat.v4 import new_code_cell

from llmcourse.runmode import QUICK_ENV

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT_S = 900
PEAK_MARK = "LLMCOURSE-PEAK-RSS-MB "
# ru_maxrss is in kB on Linux, in bytes on macOS
PEAK_CELL = (f"import resource as _r, sys as _s\n"
             f"print({PEAK_MARK!r}, _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / (1e6 if _s.platform == 'darwin' else 1e3))")


def course_notebooks(root: Path = ROOT) -> list[Path]:
    """Every lesson, then every reference solution, in chapter order."""
    return sorted(root.glob("notebooks/[0-9][0-9]-*.ipynb")) + sorted(root.glob("solutions/[0-9][0-9]-*/*.ipynb"))


@contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebook(path: Path, quick: bool, timeout_s: int = CELL_TIMEOUT_S,
                     extra_cells=()) -> tuple[nbformat.NotebookNode, float]:
    """Run every cell of ``path`` (then ``extra_cells``) in a fresh python3 kernel; return the executed
    notebook and the seconds it took. The kernel's peak memory is in ``peak_memory_mb(nb)``."""
    nb = nbformat.read(path, as_version=4)
    nb.cells += [*extra_cells, new_code_cell(PEAK_CELL)]
    client = nbclient.NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    with _env(**{QUICK_ENV: "1" if quick else "0", "MPLBACKEND": "Agg"}):
        client.execute()
    seconds = time.perf_counter() - start
    text = "".join(o.get("text", "") for o in nb.cells.pop().outputs)
    nb.metadata["llmcourse_peak_memory_mb"] = float(text.split(PEAK_MARK, 1)[1]) if PEAK_MARK in text else None
    return nb, seconds


def peak_memory_mb(nb) -> float | None:
    """The peak resident memory of the kernel that executed ``nb`` (MB), when it was measured."""
    return nb.metadata.get("llmcourse_peak_memory_mb")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to run (default: all lessons and solutions)")
    parser.add_argument("--quick", action="store_true", help=f"quick mode ({QUICK_ENV}=1)")
    args = parser.parse_args(argv)
    paths = args.paths or course_notebooks()
    mode = "quick" if args.quick else "full"
    rows, failed = [], 0
    for path in paths:
        print(f"running {path} ({mode} mode) ...", flush=True)
        try:
            nb, seconds = execute_notebook(path, args.quick)
            peak = peak_memory_mb(nb)
            rows.append((path, f"{seconds:7.1f} s", f"{peak:,.0f} MB" if peak else "?", "ok"))
        except Exception as err:  # report and go on: the table shows every notebook
            failed += 1
            rows.append((path, "", "", f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1][:80]}"))
    width = max(len(str(p.relative_to(ROOT) if p.is_absolute() else p)) for p, *_ in rows)
    print(f"\n{'notebook':<{width}}  {'time':>9}  {'peak memory':>11}  result")
    for path, seconds, peak, result in rows:
        name = path.relative_to(ROOT) if path.is_absolute() else path
        print(f"{str(name):<{width}}  {seconds:>9}  {peak:>11}  {result}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
