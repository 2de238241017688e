"""Shared pytest set-up: the chapter contract's ``exercise`` parameter."""


def pytest_generate_tests(metafunc):
    """Parametrize ``exercise`` over the EXERCISES of a ChapterContract subclass."""
    if "exercise" in metafunc.fixturenames and metafunc.cls is not None and hasattr(metafunc.cls, "EXERCISES"):
        metafunc.parametrize("exercise", metafunc.cls.EXERCISES)
