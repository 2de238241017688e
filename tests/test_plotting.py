"""Tests for the lesson helpers in llmcourse.plotting and llmcourse.attention (fast, no downloads)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from llmcourse.attention import minilm_attentions  # noqa: E402
from llmcourse.plotting import (attention_heads_grid, attention_heatmap, head_summary_heatmaps,  # noqa: E402
                                reproduction_error_bars)

TOKENS = ["[CLS]", "the", "cat", "sat", "[SEP]"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def random_weights(*shape, seed=0):
    """Rows that sum to 1, like real attention weights."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=g), dim=-1)


def labels(ticks):
    return [t.get_text() for t in ticks]


def test_heatmap_labels_both_axes_with_the_tokens():
    ax = attention_heatmap(random_weights(5, 5), TOKENS, title="head 0")
    assert labels(ax.get_xticklabels()) == TOKENS
    assert labels(ax.get_yticklabels()) == TOKENS
    assert ax.get_title() == "head 0"
    np.testing.assert_allclose(ax.images[0].get_array(), random_weights(5, 5).numpy(), rtol=1e-6)
    assert ax.images[0].get_clim() == (0.0, 1.0)


def test_heatmap_takes_row_labels_for_non_square_weights():
    rows = [f"head {h}" for h in range(3)]
    ax = attention_heatmap(random_weights(3, 5), TOKENS, row_labels=rows)
    assert labels(ax.get_yticklabels()) == rows


def test_heatmap_draws_on_a_given_axes_and_annotates_every_cell():
    fig, (left, right) = plt.subplots(1, 2)
    ax = attention_heatmap(random_weights(5, 5, seed=1), TOKENS, ax=right, annotate=True)
    assert ax is right and not left.images
    assert len(ax.texts) == 25


def test_heatmap_accepts_a_tensor_that_requires_grad():
    attention_heatmap(random_weights(5, 5).requires_grad_(), TOKENS)


@pytest.mark.parametrize("shape", [(5, 4), (4, 5), (5,), (1, 5, 5)])
def test_heatmap_rejects_weights_that_do_not_match_the_tokens(shape):
    with pytest.raises(ValueError):
        attention_heatmap(torch.rand(*shape), TOKENS)


def test_grid_has_one_heatmap_per_head_plus_a_colorbar():
    fig = attention_heads_grid(random_weights(6, 5, 5), TOKENS, ncols=4)
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 6
    assert len(fig.axes) == 7  # the two unused cells of the 2 x 4 grid are removed
    assert [ax.get_title() for ax in heatmaps] == [f"head {h}" for h in range(6)]
    assert all(labels(ax.get_xticklabels()) == TOKENS for ax in heatmaps)


def test_grid_of_bars_shows_the_chosen_query_row_for_the_chosen_heads():
    weights = random_weights(4, 5, 5, seed=2)
    fig = attention_heads_grid(weights, TOKENS, query_index=2, heads=[1, 3], titles=["L0 h1", "L0 h3"])
    assert [ax.get_title() for ax in fig.axes] == ["L0 h1", "L0 h3"]
    for ax, h in zip(fig.axes, [1, 3]):
        heights = [bar.get_height() for bar in ax.patches]
        np.testing.assert_allclose(heights, weights[h, 2].numpy(), rtol=1e-6)
        colors = [bar.get_facecolor() for bar in ax.patches]
        top = int(weights[h, 2].argmax())
        assert all((c == colors[top]) == (j == top) for j, c in enumerate(colors))  # top bar stands out
        assert labels(ax.get_xticklabels()) == TOKENS


def test_grid_rejects_mismatched_tokens_titles_and_query():
    weights = random_weights(2, 5, 5)
    with pytest.raises(ValueError):
        attention_heads_grid(weights, TOKENS[:4])
    with pytest.raises(ValueError):
        attention_heads_grid(weights, TOKENS, titles=["only one"])
    with pytest.raises(IndexError):
        attention_heads_grid(weights, TOKENS, query_index=5)


def test_minilm_attentions_on_a_tiny_random_bert(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=16, attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()

    tokens, attentions = minilm_attentions(tokenizer, model, "The cat sat")
    assert tokens == TOKENS
    assert attentions.shape == (2, 2, 5, 5)
    torch.testing.assert_close(attentions.sum(-1), torch.ones(2, 2, 5))


def test_head_summary_heatmaps_draws_one_annotated_panel_per_summary():
    g = torch.Generator().manual_seed(0)
    summaries = {"previous token": torch.rand(3, 4, generator=g), "[CLS]": torch.rand(3, 4, generator=g),
                 "spread": np.ones((3, 4))}
    fig = head_summary_heatmaps(summaries, ncols=2, suptitle="heads")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == list(summaries)
    assert all(ax.images[0].get_clim() == (0.0, 1.0) and len(ax.texts) == 12 for ax in panels)
    np.testing.assert_allclose(panels[0].images[0].get_array(), summaries["previous token"].numpy(), rtol=1e-6)
    assert {t.get_text() for t in panels[2].texts} == {"1"}
    assert len(fig.axes) == 4  # three panels and a colorbar; the empty fourth cell is removed
    assert fig._suptitle.get_text() == "heads"


def test_head_summary_heatmaps_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        head_summary_heatmaps({"a": np.zeros((2, 3)), "b": np.zeros((3, 2))})
    with pytest.raises(ValueError):
        head_summary_heatmaps({})


def test_reproduction_error_bars_groups_series_on_a_log_scale_with_the_tolerance():
    errors = {"alone": [1e-6, 2e-6, 3e-6], "chained": [1e-6, 4e-6, 5e-6]}
    ax = reproduction_error_bars(errors, ["layer 0", "layer 1", "layer 2"], tolerance=1e-4, title="errors")
    assert ax.get_yscale() == "log" and ax.get_title() == "errors"
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, errors["alone"] + errors["chained"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer 0", "layer 1", "layer 2"]
    assert [line.get_ydata()[0] for line in ax.lines] == [1e-4]
    assert "4.0e-06" in [t.get_text() for t in ax.texts]
    low, high = ax.get_ylim()
    assert low < 1e-6 and high > 1e-4


@pytest.mark.parametrize("errors", [{"a": [1e-6, 1e-6]}, {"a": [1e-6, 0.0, 1e-6]}, {}])
def test_reproduction_error_bars_rejects_bad_values(errors):
    with pytest.raises(ValueError):
        reproduction_error_bars(errors, ["0", "1", "2"])
