"""Plain values survive the trip between processes, and nothing else gets through."""

import numpy as np
import pytest
import torch

from grader.compare import tensor_problem
from grader.core import Case
from grader.values import Opaque, TensorData, dumps, loads, to_plain


def test_round_trip_keeps_kinds_dtypes_and_nan():
    value = (torch.tensor([[1.0, float("nan")], [float("inf"), -2.0]]), torch.ones(2, dtype=torch.bool),
             [np.arange(3), 4, 2.5, "s", None], {"k": torch.zeros(1, dtype=torch.int64)}, object())
    back = loads(dumps(to_plain(value)))
    assert isinstance(back, tuple) and isinstance(back[2], list) and isinstance(back[4], Opaque)
    assert isinstance(back[0], TensorData) and back[0].dtype == "torch.float32"
    np.testing.assert_array_equal(back[0].array, value[0].numpy())
    assert back[1].array.dtype == bool and back[3]["k"].dtype == "torch.int64"
    np.testing.assert_array_equal(back[2][0], np.arange(3))


def test_object_arrays_are_refused():
    with pytest.raises(ValueError, match="not plain"):
        loads('{"__ndarray__": {"dtype": "|O", "shape": [1], "data": ""}}')


@pytest.mark.parametrize("shape", [(), (0,), (1,), (2, 0, 3), (1, 1)])
def test_every_shape_comes_back_as_it_went(shape):
    """A 0-d tensor (a loss, a sum) came back as shape (1,) from the grading child, which failed a correct
    load_balancing_loss in `llmcourse grade` and `llmcourse check` while nbgrader passed it."""
    back = loads(dumps(to_plain((torch.ones(shape), np.ones(shape)))))
    assert back[0].shape == shape and back[1].shape == shape


def test_the_worst_difference_skips_equal_infinities():
    """-inf where -inf is expected is right (filters set the removed logits to -inf): the position named is
    the first real difference."""
    expected = np.array([[-np.inf, 1.0, 2.0]], dtype=np.float32)
    got = TensorData(np.array([[-np.inf, -np.inf, 2.0]], dtype=np.float32), torch.float32)
    assert tensor_problem(got, expected, Case("x", ())).endswith("at index (0, 1) (yours -inf, expected 1)")
