"""After `make test`'s set-up (`llmcourse fetch`), the course needs no network: with every connection but
loopback blocked (tests/offline.py), in the Jupyter kernels too, each loader the lessons use serves its
data. Every lesson and reference notebook of the suite also runs blocked (tests/test_notebooks.py), lessons
08 and 09 (the BIG-bench tasks and the Chinchilla points) among them."""

import json

import pytest
from offline import HERE, can_use_namespace, run_offline
from offline_loaders import PUBLIC

from llmcourse import data

DIALLED = {PUBLIC[0], "pypi.org"}  # what offline_loaders.network() tries on purpose


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    run = run_offline(["python", str(HERE / "offline_loaders.py"), str(tmp / "served.json")], tmp / "blocked.jsonl")
    return run, json.loads((tmp / "served.json").read_text())


def test_the_network_is_closed_but_for_loopback(offline):
    run, got = offline
    network = got["network"]
    assert network["loopback"] == "connected"
    assert network["public address"] != "connected" and network["pypi.org by name"] != "connected"
    assert got["kernel"] in {"ConnectionRefusedError", "gaierror", "OSError"}, got["kernel"]  # the kernel is held too
    if can_use_namespace():  # as root on Linux (CI): a network namespace stops even code the guard cannot see
        assert run.namespace
        (unguarded,) = [v for k, v in network.items() if k.startswith("without the guard")]
        assert unguarded != "connected" and "unreachable" in unguarded.lower(), unguarded
    assert DIALLED <= run.blocked_hosts()  # the guard saw and logged the attempts


def test_every_loader_the_lessons_use_serves_its_data_offline(offline):
    run, got = offline
    served = {name: entry["served"] for name, entry in got["loaders"].items()}
    assert served["load_encoder"] == "MiniLM hidden states (1, 7, 384)"
    assert served["load_causal_lm"] == "SmolLM2 next token ' Paris'"
    assert served["sentiment"] == "4000 sentences"
    assert served["winobias_occupations"] == "40 occupations"
    assert served["gpt2_tokenizer"] == "'Hello world' -> [15496, 995]"
    assert served["chinchilla_points"] == "245 points"
    assert int(served["text_corpus"].split()[0].replace(",", "")) > 4_000_000
    assert int(served["model_timeline"].split()[0]) >= 20
    for task in data.COURSE_BIGBENCH_TASKS:
        assert int(served[f"bigbench_task({task})"].split()[0]) >= 100, task
    strays = run.strays(expected=DIALLED)
    assert not strays, f"loaders tried to reach the network: {strays}"
