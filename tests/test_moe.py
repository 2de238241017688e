"""Lesson 07's helpers (llmcourse/moe.py): the mixture-of-experts layer inside TinyGPT, its balancing loss and
expert loads, the cached dense-vs-MoE runs, and the measurements of training at scale."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from llmcourse import moe  # noqa: E402
from llmcourse.tinygpt import GPTConfig, TinyGPT, char_dataset, train  # noqa: E402

CONFIG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)


def layer(n_experts=4, k=2, seed=0):
    torch.manual_seed(seed)
    return moe.MoEFeedForward(CONFIG, n_experts=n_experts, k=k)


def per_token_reference(layer, x):
    """The layer's output computed token by token: softmax, top-k, renormalised gates, weighted experts."""
    out = []
    for token in x.reshape(-1, x.shape[-1]):
        probs = torch.softmax(layer.router(token), dim=-1)
        top_p, top_i = probs.topk(layer.k)
        gates = top_p / top_p.sum()
        out.append(sum(g * layer.experts[int(i)](token[None])[0] for g, i in zip(gates, top_i)))
    return torch.stack(out).reshape(x.shape)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_moe_layer_matches_a_token_by_token_computation(k):
    m = layer(k=k)
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        assert torch.allclose(m(x), per_token_reference(m, x), atol=1e-5)


def test_each_expert_runs_only_on_its_tokens():
    m = layer(n_experts=4, k=2)
    seen = [0] * 4
    for e, expert in enumerate(m.experts):
        expert.register_forward_hook(lambda mod, inp, out, e=e: seen.__setitem__(e, seen[e] + inp[0].shape[0]))
    x = torch.randn(2, 6, 16)
    m(x)
    _, top_i = torch.softmax(m.router(x.reshape(-1, 16)), -1).topk(2)
    assert seen == [int((top_i == e).sum()) for e in range(4)]
    assert sum(seen) == 2 * 12  # k routed copies of every token, not n_experts


def test_aux_loss_is_the_switch_loss_and_loads_are_shares():
    m = layer(n_experts=4, k=2)
    x = torch.randn(4, 8, 16)
    m(x)
    probs = torch.softmax(m.router(x.reshape(-1, 16)), -1)
    f = torch.bincount(probs.argmax(-1), minlength=4).float() / 32
    assert m.aux_loss.item() == pytest.approx(4 * (f * probs.mean(0)).sum().item(), rel=1e-5)
    assert m.aux_loss.requires_grad
    assert m.last_load.sum().item() == pytest.approx(1.0) and m.last_load.shape == (4,)


def test_moe_model_has_the_dense_models_active_parameters_give_or_take_the_router():
    torch.manual_seed(0)
    dense = TinyGPT(CONFIG)
    sparse = TinyGPT(CONFIG, moe.MoEFactory(n_experts=8, k=2))
    assert len(moe.moe_layers(sparse)) == 2
    router = 2 * 16 * 8
    expert_biases = 2 * 16  # k experts each have an output bias where the dense FFN has one
    assert moe.active_params(sparse) == dense.n_params() + router + expert_biases
    assert sparse.n_params() > 3 * dense.n_params() // 2  # 8 experts of half width: 4x the FFN weights


def test_load_recorder_and_balancing_loss_in_training():
    _, data, _ = char_dataset("the quick brown fox jumps over the lazy dog " * 40)
    config = GPTConfig(vocab_size=int(data.max()) + 1, block_size=8, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    model = TinyGPT(config, moe.MoEFactory(n_experts=4, k=2))
    recorder = moe.LoadRecorder()
    result = train(model, data, steps=5, batch_size=4, aux_weight=0.01, on_step=recorder, progress=False)
    loads = recorder.array()
    assert loads.shape == (5, 2, 4)
    assert np.allclose(loads.sum(-1), 1.0)
    assert all(a > 0 for a in result["aux_loss"])


def test_load_imbalance_of_perfect_balance_and_collapse():
    even = np.full((3, 2, 4), 0.25)
    assert moe.load_imbalance(even) == {"max_share": 0.25, "cv": 0.0}
    collapsed = np.zeros((3, 2, 4))
    collapsed[..., 0] = 1.0
    assert moe.load_imbalance(collapsed)["max_share"] == 1.0


def test_dense_vs_moe_runs_are_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLMCOURSE_RETRAIN", raising=False)
    tokenizer, train_ids, val_ids = char_dataset("to be or not to be, that is the question. " * 50)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16)
    runs = moe.dense_vs_moe(config, train_ids, val_ids, steps=4, batch_size=4, n_experts=4)
    assert set(runs) == {"dense", "moe", "moe_balanced"}
    assert runs["dense"]["loss"][0] == pytest.approx(runs["moe"]["loss"][0], abs=0.1)  # same batches, similar start
    assert runs["moe"]["loads"].shape == (4, 1, 4) and runs["dense"]["loads"].numel() == 0
    assert runs["moe_balanced"]["aux_loss"][0] > 0
    capsys.readouterr()
    again = moe.dense_vs_moe(config, train_ids, val_ids, steps=4, batch_size=4, n_experts=4)
    assert "loaded the cached run" in capsys.readouterr().out
    assert again["moe"]["loss"] == runs["moe"]["loss"]
    model = TinyGPT(config, moe.MoEFactory(4, 2))
    model.load_state_dict(again["moe"]["state_dict"])  # the trained weights come back too


def test_throughput_measurements_are_positive():
    assert moe.matmul_flops_per_second(n=128, repeats=2) > 1e6
    torch.manual_seed(0)
    assert moe.training_tokens_per_second(TinyGPT(CONFIG), batch_size=2, steps=2) > 0


def test_router_gates_are_the_renormalised_top_k_probabilities():
    logits = torch.randn(7, 5) * 3
    probs, gates, experts = moe.router_gates(logits, 2)
    top_p, top_i = torch.softmax(logits, -1).topk(2)
    assert torch.allclose(probs, torch.softmax(logits, -1))
    assert torch.equal(experts, top_i) and torch.allclose(gates, top_p / top_p.sum(-1, keepdim=True))


def test_feed_forward_params_agree_with_the_check_of_moe_param_counts():
    from grader.checks.experts_and_scale import moe_param_counts_cases, param_counts

    for case in moe_param_counts_cases():
        counts = moe.feed_forward_params(*case.args, **case.kwargs)
        assert (counts["total"], counts["active"]) == param_counts(*case.args, **case.kwargs)
    glu = moe.feed_forward_params(8, 32, 4, 2, 4, biases=False, gated_dense=True)
    assert glu["dense"] == 2 * 3 * 8 * 32 and glu["experts active"] == 2 * 2 * 2 * 8 * 32


def test_gpipe_schedule_is_a_shortest_valid_gpipe_table():
    from grader.checks.experts_and_scale import schedule_problem

    for p, m in [(1, 3), (2, 3), (3, 1), (4, 8)]:
        schedule = moe.gpipe_schedule(p, m)
        table = [[None if j == -1 else ("F", int(j)) if j >= 0 else ("B", int(-j - 2)) for j in row]
                 for row in schedule]
        assert schedule_problem(table, p, m, "gpipe") is None, (p, m)


def test_routing_plot_frames_the_kept_experts():
    probs, gates, experts = moe.router_gates(torch.randn(3, 4), 2)
    fig, ax = plt.subplots()
    moe.plot_routing(probs, gates, experts, ax, "routing")
    assert len(ax.patches) == 6 and len(ax.texts) == 6
    plt.close(fig)


def test_pipeline_schedule_plot_labels_the_stages():
    schedule = np.array([[0, 1, -1, -1, -3, -2], [-1, 0, 1, -3, -2, -1]])
    fig, ax = plt.subplots()
    moe.plot_pipeline_schedule(schedule, ax, "GPipe")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["stage 0", "stage 1"]
    plt.close(fig)
