"""One module of checks per chapter; importing this package registers them all."""

from grader.checks import attention  # noqa: F401  (chapter 02)
