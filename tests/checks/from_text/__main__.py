"""python -m checks.from_text NAME ... (from tests/): write each exercise's brief beside its implementation."""

import sys

from checks.from_text import HERE, brief

for exercise in sys.argv[1:]:
    (HERE / f"{exercise}.md").write_text(brief(exercise))
    print(HERE / f"{exercise}.md")
