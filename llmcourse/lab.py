"""Start JupyterLab on the course: one function that ``make lab`` (through ``llmcourse lab``) and the
browser tests both use, so the tests drive the server a learner gets.
"""

import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LabServer:
    """How to run a JupyterLab server on ``root`` (its argv and environment), and its URL."""

    root: Path
    port: int = 8888
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    state_dir: Path | None = None  # own config, runtime, settings and workspaces folders (tests: a temp folder)
    open_browser: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "jupyter", "lab", "--ip=127.0.0.1", f"--port={self.port}",
                "--ServerApp.port_retries=0", f"--ServerApp.root_dir={self.root}",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.open_browser={self.open_browser}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")
        if self.state_dir is not None:
            args += [f"--LabApp.user_settings_dir={self.state_dir / 'settings'}",
                     f"--LabApp.workspaces_dir={self.state_dir / 'workspaces'}"]
        return args

    def env(self) -> dict:
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"  # nbgrader runs its helpers by name
        if self.state_dir is not None:
            env["JUPYTER_CONFIG_DIR"] = str(self.state_dir / "config")
            env["JUPYTER_RUNTIME_DIR"] = str(self.state_dir / "runtime")
        return env


def main(argv=None) -> int:
    """``llmcourse lab``: copy each chapter's exercises and lesson into my-work/ (once), then open JupyterLab."""
    import argparse

    from llmcourse.workspace import WORK_ENV, course_root, start_all, work_dir

    parser = argparse.ArgumentParser(prog="llmcourse lab", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    root = course_root()
    for line in start_all(root):
        print(line)
    # the course folder, which holds my-work/; where LLMCOURSE_WORK_DIR puts my-work/ elsewhere (a shared,
    # read-only course on a hub), the folder that holds my-work/
    served = work_dir(root).parent if os.environ.get(WORK_ENV) else root
    server = LabServer(served, port=args.port)  # the browser opens with the token; only 127.0.0.1 listens
    os.chdir(served)  # nbgrader's Validate and formgrader read nbgrader_config.py from the course folder
    os.execve(sys.executable, server.argv(), server.env())


if __name__ == "__main__":
    sys.exit(main())
