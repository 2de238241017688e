"""Payoff cells of the exercise notebooks: run the learner's own function on real models and data."""


def yours(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or None (with a note) while ``fn`` still raises NotImplementedError, so a
    payoff cell runs on the released stub too and says what to do."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        print(f"`{fn.__name__}` is not implemented yet: come back to this cell when its check passes.")
        return None
