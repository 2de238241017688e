"""DPO's beta sweep for lesson 11: the lesson's full-mode DPO run at several values of beta; for each, the last
logged reward margin, the mean per-token KL(policy || reference) over response tokens, and the held-out BBQ
metrics with their paired-bootstrap intervals; and the lesson's quick-mode run at its own beta, which
tests/test_notebooks.py compares with the lesson's own quick run. Writes llmcourse/course_data/dpo_beta_sweep.json
with the commit and the seed; the lesson loads it for its reward-against-KL figure.

    .venv/bin/python benchmarks/dpo_beta_sweep.py                 # 4 betas and the quick run (about 25 minutes)
    .venv/bin/python benchmarks/dpo_beta_sweep.py --betas 0.25    # one beta

Every run trains anew with the lesson's sizes (llmcourse.instruct.LESSON_DPO); with --reuse, a run cached by the
same code and configuration (the full-mode lesson's, at its beta) is taken as it is.
"""

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path

from llmcourse import bbq
from llmcourse.data import SEED, SUMS_FILE, shipped_data_dir
from llmcourse.instruct import LESSON_DPO, SWEEP_FILE, dpo_point, evaluation_items, measure
from llmcourse.models import load_causal_lm

BETAS = (0.1, 0.25, 0.5, 1.0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", nargs="+", type=float, default=list(BETAS))
    parser.add_argument("--out", type=Path, default=shipped_data_dir() / SWEEP_FILE)
    parser.add_argument("--reuse", action="store_true", help="take runs already cached for the same configuration")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    items, _ = bbq.load_items()
    train_items, held_out = bbq.split_by_template(items)
    tokenizer, model = load_causal_lm()
    full = LESSON_DPO["full"]
    before = measure(model, tokenizer, evaluation_items(held_out, full["n_ambiguous"], full["n_disambiguated"]))
    runs = []
    for beta in args.betas:
        start = time.perf_counter()
        runs.append(dpo_point(model, tokenizer, train_items, held_out, {**full, "beta": beta}, before,
                              retrain=None if args.reuse else True))
        row = runs[-1]
        print(f"beta {beta}: KL {row['kl']:.4f}, margin {row['margin']:.3f}, stereotyped {row['stereotyped share']:.3f}"
              f", disambiguated accuracy {row['disambiguated accuracy']:.3f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    quick = dpo_point(model, tokenizer, train_items, held_out, LESSON_DPO["quick"],
                      retrain=None if args.reuse else True)
    result = {"commit": commit, "uncommitted changes": bool(dirty), "seed": SEED, "config": LESSON_DPO,
              "runs": runs, "quick": quick}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.out.parent == shipped_data_dir():
        record_checksum(args.out)
    print(f"wrote {args.out}")


def record_checksum(path: Path) -> None:
    """Put the file's SHA-256 into course_data/SHA256SUMS (the shipped data are checked against it)."""
    sums = path.parent / SUMS_FILE
    name = path.relative_to(path.parent).as_posix()
    lines = [line for line in sums.read_text(encoding="utf-8").splitlines() if line.split()[1:] != [name]]
    lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}")
    sums.write_text("\n".join(sorted(lines, key=lambda line: line.split(maxsplit=1)[1])) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
