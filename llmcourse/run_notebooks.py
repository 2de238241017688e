"""Execute notebooks headless (nbclient): used by the tests (quick mode) and ``make course`` (full mode).

``python -m llmcourse.run_notebooks [--quick] [paths...]`` executes every lesson and reference
solution (or the given ones) and prints a table of times.
"""

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nbclient
import nbformat

from llmcourse.runmode import QUICK_ENV

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT_S = 900


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


def execute_notebook(path: Path, quick: bool, timeout_s: int = CELL_TIMEOUT_S) -> tuple[nbformat.NotebookNode, float]:
    """Run every cell of ``path`` in a fresh python3 kernel; return the executed notebook and seconds."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    with _env(**{QUICK_ENV: "1" if quick else "0", "MPLBACKEND": "Agg"}):
        client.execute()
    return nb, time.perf_counter() - start


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
            _, seconds = execute_notebook(path, args.quick)
            rows.append((path, f"{seconds:7.1f} s", "ok"))
        except Exception as err:  # report and go on: the table shows every notebook
            failed += 1
            rows.append((path, "", f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1][:80]}"))
    width = max(len(str(p.relative_to(ROOT) if p.is_absolute() else p)) for p, _, _ in rows)
    print(f"\n{'notebook':<{width}}  {'time':>9}  result")
    for path, seconds, result in rows:
        name = path.relative_to(ROOT) if path.is_absolute() else path
        print(f"{str(name):<{width}}  {seconds:>9}  {result}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
