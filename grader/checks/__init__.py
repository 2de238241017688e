"""One module of checks per chapter; importing this package registers them all."""

from grader.checks import scale  # noqa: F401  (chapter 01)
from grader.checks import attention  # noqa: F401  (chapter 02)
from grader.checks import blocks  # noqa: F401  (chapter 03)
from grader.checks import transfer  # noqa: F401  (chapter 04)
from grader.checks import decoding  # noqa: F401  (chapter 05)
from grader.checks import bias  # noqa: F401  (chapter 06)
from grader.checks import experts  # noqa: F401  (chapter 07)
from grader.checks import scaling  # noqa: F401  (chapter 08)
from grader.checks import evaluation  # noqa: F401  (chapter 09)
from grader.checks import open_models  # noqa: F401  (chapter 10)
