"""Quick mode: one switch (``LLMCOURSE_QUICK=1``) that shrinks training and evaluation sizes.

The test suite executes every lesson in quick mode; ``make course`` runs them in full mode.
Lessons read the switch only through these helpers.
"""

import os

QUICK_ENV = "LLMCOURSE_QUICK"


def is_quick() -> bool:
    """True when ``LLMCOURSE_QUICK`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, quick):
    """The full-mode value, or the quick-mode one when quick mode is on."""
    return quick if is_quick() else full


def announce_mode() -> str:
    """Print (and return) which mode this run uses, so a lesson's output says it."""
    if is_quick():
        msg = f"Quick mode ({QUICK_ENV}=1): smaller training and evaluation sizes, numbers are rougher."
    else:
        msg = f"Full mode: the lesson's real sizes (set {QUICK_ENV}=1 for a fast smoke run)."
    print(msg)
    return msg
