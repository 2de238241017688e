"""DPO's beta sweep for lesson 11: the lesson's full-mode DPO run at several values of beta; for each, the last
logged reward margin, the mean per-token KL(policy || reference) over response tokens, and the held-out BBQ
metrics with their paired-bootstrap intervals. Writes llmcourse/course_data/dpo_beta_sweep.json (with the
commit and the seed), which the lesson loads for its reward-against-KL figure.

    .venv/bin/python benchmarks/dpo_beta_sweep.py                 # the lesson's sizes, 4 betas (about 20 minutes)
    .venv/bin/python benchmarks/dpo_beta_sweep.py --betas 0.1     # one beta

Every run trains anew (retrain=True). The sizes are the lesson's full-mode ones (llmcourse.instruct.LESSON_DPO),
so the lesson's live beta lands on the sweep's point for that beta (tests/test_instruct.py checks it).
"""

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from llmcourse import bbq
from llmcourse.data import SEED, shipped_data_dir
from llmcourse.instruct import (LESSON_DPO, SWEEP_FILE, chat_prompt, dpo_pairs, evaluation_items, measure,
                                response_kl, train_dpo)
from llmcourse.models import load_causal_lm

BETAS = (0.1, 0.25, 0.5, 1.0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", nargs="+", type=float, default=list(BETAS))
    parser.add_argument("--out", type=Path, default=shipped_data_dir() / SWEEP_FILE)
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    items, _ = bbq.load_items()
    train_items, held_out = bbq.split_by_template(items)
    eval_items = evaluation_items(held_out, LESSON_DPO["n_eval"])
    kl_items = eval_items[:LESSON_DPO["n_kl"] // 2] + \
        eval_items[LESSON_DPO["n_eval"]:LESSON_DPO["n_eval"] + LESSON_DPO["n_kl"] // 2]
    pairs = dpo_pairs(train_items, LESSON_DPO["steps"] * LESSON_DPO["batch_size"])
    tokenizer, model = load_causal_lm()
    before = measure(model, tokenizer, eval_items)
    runs = []
    for beta in args.betas:
        torch.manual_seed(SEED)
        tokenizer, model = load_causal_lm()
        start = time.perf_counter()
        tuned, run = train_dpo(model, tokenizer, pairs, beta=beta, steps=LESSON_DPO["steps"],
                               batch_size=LESSON_DPO["batch_size"], lr=LESSON_DPO["lr"], retrain=True)
        after = measure(tuned, tokenizer, eval_items)
        kl = response_kl(tuned, tokenizer, [chat_prompt(tokenizer, i) for i in kl_items for _ in i.answers],
                         [a for i in kl_items for a in i.answers])
        change = bbq.paired_bootstrap(eval_items, before, after)
        row = {"beta": beta, "kl": kl, "margin": float(run["log"][-1]["rewards/margins"]),
               "seconds_per_step": run["seconds_per_step"],
               **{name: float(c["after"]) for name, c in change.items()},
               "changes": {name: {"change": float(c["change"]), "interval": [float(x) for x in c["interval"]]}
                           for name, c in change.items()}}
        runs.append(row)
        print(f"beta {beta}: KL {kl:.4f}, margin {row['margin']:.3f}, stereotyped {row['stereotyped share']:.3f}, "
              f"disambiguated accuracy {row['disambiguated accuracy']:.3f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    result = {"commit": commit, "seed": SEED, "config": LESSON_DPO,
              "before": {k: float(v) for k, v in bbq.metrics(before).items()},
              "eval_items": hashlib.sha256(json.dumps([i.example_id for i in eval_items]).encode()).hexdigest(),
              "runs": runs}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
