"""Run a piece of the suite on a machine that reaches nothing but itself.

``run_offline(args)`` starts ``python tests/offline.py ARGS`` in a child that, before doing anything else,
enters a network namespace of its own with only the loopback interface up (as root on Linux: nothing leaves
the machine, whatever the language of the code that tries), and that always runs with the audit-hook guard
of ``tests/offline_guard`` on ``PYTHONPATH`` (every Python process it starts, Jupyter kernels included,
refuses connections and name lookups that are not local, and logs them). The child's commands:

    notebook PATH OUT [CELLS]   execute a notebook in quick mode (then the code cells in the JSON file CELLS),
                                write the executed notebook to OUT
    python FILE OUT             run FILE's ``main()`` and write what it returns, as JSON, to OUT
"""

import ctypes
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUARD = HERE / "offline_guard"
LOG_ENV = "LLMCOURSE_BLOCKED_LOG"
NAMESPACE_ENV = "LLMCOURSE_OFFLINE_NAMESPACE"  # what the child says about its namespace
HUB_CHECK = {"huggingface.co"}  # llmcourse.models.hub_reachable() may ask the hub; refused, it stays offline
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def can_use_namespace() -> bool:
    """A network namespace of its own needs root on Linux (as the grading sandbox does)."""
    return sys.platform.startswith("linux") and os.geteuid() == 0


def enter_loopback_only_namespace() -> None:
    """unshare(CLONE_NEWNET), then bring up ``lo``: the kernels still reach their client over 127.0.0.1."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


@dataclass
class OfflineRun:
    proc: subprocess.CompletedProcess
    namespace: bool  # the child ran in a loopback-only network namespace
    blocked: list[dict]  # every refused connection or lookup, from every process of the run

    def blocked_hosts(self) -> set[str]:
        return {b["host"] for b in self.blocked}

    def strays(self, expected: set[str] = frozenset()) -> dict[str, str]:
        """host -> the code that tried it, for every refused attempt but the hub check and ``expected``."""
        return {b["host"]: b["caller"] for b in self.blocked if b["host"] not in HUB_CHECK | expected}


def run_offline(args: list[str], log: Path, timeout_s: float = 600) -> OfflineRun:
    """``python tests/offline.py ARGS`` loopback-only (see the module's docstring); fails on a non-zero exit."""
    env = dict(os.environ, **{LOG_ENV: str(log), "PYTHONPATH": os.pathsep.join(
        [str(GUARD), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])})
    env.pop(NAMESPACE_ENV, None)
    proc = subprocess.run([sys.executable, str(Path(__file__)), *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    assert proc.returncode == 0, f"offline run {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    blocked = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return OfflineRun(proc, "namespace: loopback only" in proc.stdout, blocked)


def _child(argv: list[str]) -> None:
    if can_use_namespace():
        enter_loopback_only_namespace()
        print("namespace: loopback only", flush=True)
    if "offline_guard" not in (getattr(sys.modules.get("sitecustomize"), "__file__", None) or ""):
        raise SystemExit(f"the guard is not loaded: {GUARD} must be first on PYTHONPATH")
    command, *rest = argv
    if command == "notebook":
        import nbformat
        from nbformat.v4 import new_code_cell

        from llmcourse.run_notebooks import execute_notebook

        path, out, *cells = rest
        extra = [new_code_cell(source) for source in json.loads(Path(cells[0]).read_text())] if cells else []
        nb, seconds = execute_notebook(Path(path), quick=True, extra_cells=extra)
        nb.metadata["llmcourse_seconds"] = seconds
        nbformat.write(nb, out)
    elif command == "python":
        import runpy

        file, out = rest
        Path(out).write_text(json.dumps(runpy.run_path(file)["main"](), indent=1, default=str))
    else:
        raise SystemExit(f"unknown command {command!r}: notebook or python")


if __name__ == "__main__":
    _child(sys.argv[1:])
