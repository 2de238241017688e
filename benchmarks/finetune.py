"""Fine-tuning recipes on the sentiment sentences: test accuracy and training time; prints a table.

    .venv/bin/python benchmarks/finetune.py            # every recipe (about half an hour on 2 cores)
    .venv/bin/python benchmarks/finetune.py --only lesson-finetune lesson-scratch
    .venv/bin/python benchmarks/finetune.py --quick    # tiny sizes: a smoke run of the same code

Every recipe trains anew (``retrain=True``, as ``LLMCOURSE_RETRAIN=1``), so the times are real. The
first rows reproduce the issue's reference point (one epoch over 3,200 sentences, batch 32, maximum
length 64, AdamW 5e-5, every batch padded to 64 tokens), then cut its cost one change at a time:
padding per batch, batches bucketed by length, a larger learning rate, fewer sentences, fewer layers
trained. The lesson's three runs are the rows named ``lesson-*``; ``scratch-lr-1e-3`` gives the random
network a learning rate of its own, to see how much of the gap a better recipe for it closes. Targets (issue 10): the fine-tuned
MiniLM at least 80 % test accuracy; from random weights at least 10 points lower; features reported.
Training time counts the optimizer steps only; evaluation (four passes over the 800 test sentences)
is listed apart.
"""

import argparse
import dataclasses
import time

from llmcourse.finetune import Recipe, run_recipe

RECIPES = {
    "issue-baseline": Recipe("finetune", lr=5e-5, batching="fixed"),
    "dynamic-padding": Recipe("finetune", lr=5e-5, batching="dynamic"),
    "bucketed": Recipe("finetune", lr=5e-5, batching="bucket"),
    "lesson-finetune": Recipe("finetune", lr=1e-4, batching="bucket"),
    "half-the-sentences": Recipe("finetune", lr=1e-4, batching="bucket", n_train=1600),
    "top-2-layers": Recipe("finetune", lr=1e-4, batching="bucket", train_layers=2),
    "lesson-scratch": Recipe("scratch", lr=1e-4, batching="bucket"),
    "scratch-lr-1e-3": Recipe("scratch", lr=1e-3, batching="bucket"),
    "lesson-features": Recipe("features", lr=1e-2, batching="bucket"),
}
QUICK = {"n_train": 64, "n_test": 64, "batch_size": 16}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(RECIPES), help="run only these recipes")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = parser.parse_args(argv)
    rows = {}
    for name in args.only or RECIPES:
        recipe = RECIPES[name]
        if args.quick:
            recipe = dataclasses.replace(recipe, **QUICK)
        start = time.perf_counter()
        result = run_recipe(recipe, retrain=True)
        rows[name] = (recipe, result, time.perf_counter() - start)

    print(f"\n{'recipe':<20} {'kind':<9} {'batching':<8} {'lr':>7} {'sentences':>9} {'layers':>6} "
          f"{'accuracy':>8} {'train s':>8} {'eval s':>7} {'padding':>7}")
    for name, (recipe, result, _) in rows.items():
        padding = f"{result['padding_share']:.0%}" if "padding_share" in result else "-"
        layers = "all" if recipe.train_layers is None else str(recipe.train_layers)
        if recipe.kind == "features":
            layers = "0"
        print(f"{name:<20} {recipe.kind:<9} {recipe.batching:<8} {recipe.lr:>7.0e} {recipe.n_train:>9,} {layers:>6} "
              f"{result['test_accuracy']:>8.1%} {result['train_seconds']:>8.1f} {result['eval_seconds']:>7.1f} "
              f"{padding:>7}")
    if "features" in {r.kind for r, _, _ in rows.values()}:
        features = next(res for r, res, _ in rows.values() if r.kind == "features")
        print(f"(features: plus {features['feature_seconds']:.1f} s to embed the sentences once)")
    if "lesson-finetune" in rows and "lesson-scratch" in rows:
        tuned = rows["lesson-finetune"][1]["test_accuracy"]
        scratch = rows["lesson-scratch"][1]["test_accuracy"]
        print(f"\ntargets: fine-tuned {tuned:.1%} (>= 80 %: {'met' if tuned >= 0.8 else 'NOT met'}); "
              f"from random weights {scratch:.1%}, {100 * (tuned - scratch):.1f} points lower "
              f"(>= 10: {'met' if tuned - scratch >= 0.1 else 'NOT met'})")


if __name__ == "__main__":
    main()
