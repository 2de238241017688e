"""Run by tests/test_offline.py inside ``tests/offline.py``'s loopback-only child: is the network really
closed, and does every loader the lessons use serve its data with the network closed?"""

import socket
import subprocess
import sys
import time

PUBLIC = ("151.101.0.223", 443)  # an address of pypi.org, dialled without a name lookup


def connect(address) -> str:
    """'connected', or the error that stopped the connection."""
    try:
        socket.create_connection(address, timeout=5).close()
        return "connected"
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def network() -> dict:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    unguarded = "-I skips PYTHONPATH, so the guard: only the namespace stands in the way"
    raw = subprocess.run([sys.executable, "-I", "-c", "import socket\ntry:\n socket.create_connection("
                          f"{PUBLIC!r}, timeout=5).close(); print('connected')\nexcept OSError as e: print(e)"],
                         capture_output=True, text=True)
    return {"public address": connect(PUBLIC), "pypi.org by name": connect(("pypi.org", 443)),
            "loopback": connect(server.getsockname()), f"without the guard ({unguarded})": raw.stdout.strip()}


def kernel() -> str:
    """What a Jupyter kernel started from here gets when it dials out."""
    import nbclient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(
        f"import socket\ntry:\n    socket.create_connection({PUBLIC!r}, timeout=5).close()\n    print('connected')\n"
        "except OSError as err:\n    print(type(err).__name__)")])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb.cells[0].outputs[0]["text"].strip()


def loaders() -> dict:
    """Each loader the lessons use: what it served, and how long it took."""
    import torch

    from llmcourse import data, models

    def encoder():
        tokenizer, model = models.load_encoder()
        with torch.no_grad():
            hidden = model(**tokenizer("The monkey ate that banana", return_tensors="pt")).last_hidden_state
        return f"MiniLM hidden states {tuple(hidden.shape)}"

    def causal_lm():
        tokenizer, model = models.load_causal_lm()
        ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
        with torch.no_grad():
            nxt = model(ids).logits[0, -1].argmax()
        return f"SmolLM2 next token {tokenizer.decode(nxt)!r}"

    checks = {
        "load_encoder": encoder,
        "load_causal_lm": causal_lm,
        "sentiment": lambda: f"{sum(s.num_rows for s in data.sentiment().values())} sentences",
        "text_corpus": lambda: f"{len(data.text_corpus()):,} characters",
        "winobias_occupations": lambda: f"{len(data.winobias_occupations())} occupations",
        "gpt2_tokenizer": lambda: f"'Hello world' -> {data.gpt2_tokenizer().encode('Hello world')}",
        "chinchilla_points": lambda: f"{len(data.chinchilla_points())} points",
        "model_timeline": lambda: f"{len(data.model_timeline())} models",
        **{f"bigbench_task({t})": (lambda t=t: f"{len(data.bigbench_task(t)['examples'])} examples")
           for t in data.COURSE_BIGBENCH_TASKS},
    }
    served = {}
    for name, load in checks.items():
        start = time.perf_counter()
        served[name] = {"served": load(), "seconds": round(time.perf_counter() - start, 2)}
    return served


def main() -> dict:
    return {"network": network(), "kernel": kernel(), "loaders": loaders()}
