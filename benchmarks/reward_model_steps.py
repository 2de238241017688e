"""Lesson 11's reward model trained for longer: does it learn which person a disambiguated context points to?

    python benchmarks/reward_model_steps.py [--steps 40 100 200] [--cached]

Trains MiniLM with a scalar head as the lesson does (TRL's RewardTrainer, batches of 16 pairs of the three kinds,
learning rate 5e-5; the lesson's full mode trains 40 steps) for each number of steps,
on the lesson's full-mode held-out pairs, and prints one table: held-out pair accuracy by kind with its 95 %
interval (a bootstrap over templates), the held-out contexts where it preferred the same person for both of BBQ's
opposite questions, and the seconds per step. Every run trains afresh unless ``--cached`` takes a cached one.
"""

import argparse

from llmcourse import bbq
from llmcourse.instruct import (LESSON_REWARD_TEST, PAIR_KINDS, accuracy_by_kind, reward_pairs, reward_test_pairs,
                                same_person_share, train_reward_model)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", type=int, default=[40, 100, 200])
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--cached", action="store_true")
    args = parser.parse_args(argv)
    items, _ = bbq.load_items()
    train_items, held_out = bbq.split_by_template(items)
    train, test = reward_pairs(train_items), reward_test_pairs(held_out, **LESSON_REWARD_TEST["full"])
    rows = []
    for steps in args.steps:
        run = train_reward_model(train, test, steps=steps, lr=args.lr, retrain=None if args.cached else True)
        right = run["chosen"] > run["rejected"]
        rows.append((steps, accuracy_by_kind(test, right), same_person_share(test, right), run["seconds_per_step"]))
    counts = ", ".join(f"{kind} {share['n']}" for kind, share in rows[0][1].items())
    print(f"\nheld-out pairs: {counts}; learning rate {args.lr}")
    print(f"{'steps':>5}  " + "  ".join(f"{k:>22}" for k in PAIR_KINDS) + f"  {'same person':>12}  {'s/step':>6}")
    for steps, shares, blind, per_step in rows:
        cells = [f"{s['share']:6.1%} [{s['interval'][0]:5.1%}, {s['interval'][1]:5.1%}]" for s in shares.values()]
        print(f"{steps:>5}  " + "  ".join(f"{c:>22}" for c in cells)
              + f"  {blind['same']:>5} of {blind['contexts']:<3}  {per_step:6.2f}")


if __name__ == "__main__":
    main()
