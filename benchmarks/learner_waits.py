"""The learner's waits: each command a whole process, run several times; prints the median and range of each.

    .venv/bin/python benchmarks/learner_waits.py [--runs 5] [--fresh-lab]

- ``llmcourse check 02`` on the untouched release (what a learner runs first);
- ``llmcourse progress`` with all ten chapters started (a copy of each release in my-work/: every check runs);
- each shipped model: the load once ``torch`` and ``transformers`` (and the model's classes) are imported,
  and the whole process that does only that (``import torch`` and ``transformers`` alone take seconds);
- ``--fresh-lab``: ``make lab`` on a fresh clone with an empty cache (a new venv, the install, the models
  fetched and converted) until JupyterLab answers on its port: minutes per run.

The models and data must be set up already (``make setup``), except for ``--fresh-lab``.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LOADED = "LOAD-SECONDS "
# the load alone: the libraries and the model classes are imported before the clock starts
LOAD_AFTER_IMPORTS = (
    "import time, torch, transformers\n"
    "from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, BertModel, LlamaForCausalLM\n"
    "from llmcourse import models\n"
    "start = time.perf_counter()\n"
    "models.{loader}()\n"
    f"print({LOADED!r}, time.perf_counter() - start)\n")
LOADERS = {"all-MiniLM-L6-v2": "load_encoder", "SmolLM2-135M-Instruct": "load_causal_lm"}


def timed(argv: list[str], cwd: Path = ROOT, env: dict | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # `check` exits 1 when an exercise fails, as on a release
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def learner_copy(tmp: Path) -> Path:
    """A folder laid out like the course, with every chapter started (copies of the releases in my-work/)."""
    course = tmp / "course"
    shutil.copytree(ROOT / "exercises", course / "exercises")
    (course / "solutions").mkdir()
    subprocess.run([PY, "-m", "llmcourse.cli", "start", "all"], cwd=course, check=True, capture_output=True)
    return course


def fresh_lab(tmp: Path) -> float:
    """Seconds from `make lab` on a fresh clone with an empty cache until JupyterLab answers."""
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    port = 18000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "LLMCOURSE_DATA_DIR"}}
    env.update(LLMCOURSE_CACHE_DIR=str(tmp / "cache"), BROWSER="true")
    start = time.perf_counter()
    proc = subprocess.Popen(["make", "lab", f"PORT={port}"], cwd=clone, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=1)
                return time.perf_counter() - start
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"make lab exited {proc.returncode} before JupyterLab answered")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def row(name: str, samples: list[float]) -> str:
    return (f"{name:<52} {statistics.median(samples):>8.2f} s   {min(samples):>6.2f} - {max(samples):<6.2f}  "
            f"({len(samples)} runs)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fresh-lab", action="store_true", help="also time make lab on a fresh clone (slow)")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        course = learner_copy(Path(tmp))
        commands = {"llmcourse check 02 (untouched release)": ([PY, "-m", "llmcourse.cli", "check", "02"], ROOT),
                    "llmcourse progress (ten chapters started)": ([PY, "-m", "llmcourse.cli", "progress"], course)}
        for name, (command, cwd) in commands.items():
            timed(command, cwd)  # warm-up: the file cache, as on a learner's second run
            results[name] = [timed(command, cwd)[0] for _ in range(args.runs)]
        for model, loader in LOADERS.items():
            code = [PY, "-c", LOAD_AFTER_IMPORTS.format(loader=loader)]
            timed(code)
            runs = [timed(code) for _ in range(args.runs)]
            results[f"{model}: load after imports"] = [float(out.split(LOADED)[1].split()[0]) for _, out in runs]
            results[f"{model}: whole process"] = [seconds for seconds, _ in runs]
        if args.fresh_lab:
            results["make lab, fresh clone and empty cache"] = [fresh_lab(Path(tempfile.mkdtemp(dir=tmp)))
                                                                 for _ in range(args.runs)]
    print(f"{'wait':<52} {'median':>10}   {'range':<15}")
    for name, samples in results.items():
        print(row(name, samples))


if __name__ == "__main__":
    main()
