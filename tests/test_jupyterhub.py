"""A class on a real JupyterHub, as root (deploy/jupyterhub/): two local accounts, the hub with
LocalProcessSpawner and the Python configurable-http-proxy on 127.0.0.1, the grading service as a hub service.

The learners' servers cannot enter root's folders, so what they run lies in a world-readable temporary
folder, as on a class machine: a virtualenv made from a system Python with the project's packages
(``shared/venv``, its site-packages reached through a ``.pth``: no 2 GB copy), the release-only tree that
``deploy/jupyterhub/release_tree.py`` builds, and the model cache (hard links: no copy). The instructor's
course (solutions, hidden checks, gradebook) stays in pytest's root-only folder.

Skipped with a one-line reason where not root or without ``useradd``; ``LLMCOURSE_REQUIRE_HUB=1`` (as in
.ci/run) makes that a failure.
"""

import csv
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest
import requests

from course_tools import llmcourse, new_course
from hostile_submissions import TOTAL, WRONG_SCORE, WRONG_SOFTMAX, filled, reference_answers

pytestmark = pytest.mark.xdist_group("jupyterhub")  # one hub, two accounts: one worker

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "jupyterhub"
A02 = "02-self-attention"
REQUIRE_ENV = "LLMCOURSE_REQUIRE_HUB"


def _need(what: str) -> None:
    if os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{REQUIRE_ENV}=1 but {what}")
    pytest.skip(what)


def others_can_read(path: Path) -> bool:
    """A user who is neither owner nor in the group can enter every folder down to ``path`` and read it."""
    path = path.resolve()
    on_the_way = all(os.stat(folder).st_mode & stat.S_IXOTH for folder in path.parents)
    return on_the_way and bool(os.stat(path).st_mode & stat.S_IROTH)


def hardlinked(source: Path, dest: Path) -> Path:
    """A copy of ``source`` at ``dest`` made of hard links (seconds, no space; a copy across filesystems),
    every folder and file readable by all; a file others cannot read is copied and opened instead (opening
    its link would change the original)."""
    for folder, dirs, files in os.walk(source):
        target = dest / Path(folder).relative_to(source)
        target.mkdir(mode=0o755, exist_ok=True)
        target.chmod(0o755)
        for name in [d for d in dirs if Path(folder, d).is_symlink()]:
            os.symlink(os.readlink(Path(folder, name)), target / name)
        for name in files:
            src = Path(folder, name)
            if src.is_symlink():
                os.symlink(os.readlink(src), target / name)
                continue
            if src.stat().st_mode & stat.S_IROTH:
                try:
                    os.link(src, target / name)
                    continue
                except OSError:  # another filesystem
                    pass
            shutil.copy2(src, target / name)
            (target / name).chmod(0o644 | src.stat().st_mode & 0o111)
    return dest


def learners_venv(shared: Path) -> Path:
    """``shared/venv``: the learners' interpreter, a venv from a system Python of this one's version (else this
    one's base installation, hard-linked), with this project's packages (a copy of llmcourse/ and grader/,
    then the test environment's site-packages, in place when learners can read it, else hard-linked), and an
    ``llmcourse`` command."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = next((p for d in ("/usr/bin", "/usr/local/bin") if (p := Path(d, version)).is_file() and others_can_read(p)),
                None)
    if base is None:
        base = hardlinked(Path(sys.base_prefix), shared / "python") / "bin" / version
    venv = shared / "venv"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    src = shared / "src"
    for package in ("llmcourse", "grader"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    site = Path(sysconfig.get_paths()["purelib"])
    if not others_can_read(site):
        site = hardlinked(site, shared / "site-packages")
    (venv / "lib" / version / "site-packages" / "llmcourse-hub-test.pth").write_text(f"{src}\n{site}\n")
    command = venv / "bin" / "llmcourse"
    command.write_text(f"#!{venv}/bin/python\nimport sys\nfrom llmcourse.cli import main\nsys.exit(main())\n")
    command.chmod(0o755)
    return venv


class Learner:
    """A local account made for the test (deleted afterwards, with every process it still runs)."""

    def __init__(self, name: str):
        self.name = name
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment", "llmcourse hub test", name],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(name)
        self.uid, self.home = entry.pw_uid, Path(entry.pw_dir)
        self.token = ""  # a hub API token of this learner's, made through the hub's API

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", self.name, "--", *argv], capture_output=True, text=True, timeout=120)

    def delete(self) -> None:
        for _ in range(20):  # what the hub's shutdown left (a kernel's child): by process id, this uid's only
            pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == self.uid]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        subprocess.run(["userdel", "--force", "--remove", self.name], capture_output=True)


def _works_in(proc: Path, folder: Path) -> bool:
    try:
        return Path(os.readlink(proc / "cwd")).is_relative_to(folder)
    except OSError:
        return False


def _owner(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


class Hub:
    """The hub as started from deploy/jupyterhub/jupyterhub_config.py, plus an admin service for the test."""

    def __init__(self, tmp: Path, env: dict, port: int, course: Path):
        self.url, self.course, self.state = f"http://127.0.0.1:{port}", course, Path(env["LLMCOURSE_HUB_STATE"])
        self.admin_token = secrets.token_hex(24)
        config = tmp / "test_config.py"
        config.write_text(
            "c = get_config()  # noqa\n"
            f"load_subconfig({str(DEPLOY / 'jupyterhub_config.py')!r})  # noqa\n"
            "# the test's own admin: creates the learners and their tokens, starts their servers\n"
            f"c.JupyterHub.services.append({{'name': 'hub-test', 'api_token': {self.admin_token!r}}})\n"
            "c.JupyterHub.load_roles = [{'name': 'hub-test', 'services': ['hub-test'],\n"
            "                            'scopes': ['admin:users', 'admin:servers', 'tokens']}]\n")
        self.log_path = tmp / "hub.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=tmp, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return self.log_path.read_text()[-6000:]

    def api(self, method: str, path: str, token: str | None = None, body=None, ok=(200, 201, 202, 204)):
        reply = requests.request(method, f"{self.url}/hub/api{path}", json=body, timeout=30,
                                 headers={"Authorization": f"token {token or self.admin_token}"})
        assert reply.status_code in ok, f"{method} {path}: {reply.status_code} {reply.text[:500]}"
        return reply.json() if reply.content else None

    def wait(self, what: str, ready, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if result := ready():
                    return result
            except Exception:  # not up yet
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout} s:\n{self.logs()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the hub stops the servers, the service and the proxy
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        # what a hub that died would leave: its proxy (by its pid file), the grading service and its workers
        # (the processes working in the instructor's course folder), each by its process id
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _works_in(p, self.course)]
        try:
            proxy = int((self.state / "proxy.pid").read_text())
            if b"configurable-http-proxy" in Path(f"/proc/{proxy}/cmdline").read_bytes():  # not a reused pid
                pids.append(proxy)
        except (OSError, ValueError):
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_in_kernel(hub: Hub, learner: Learner, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a new kernel of ``learner``'s server (REST and websocket, with the learner's token, as
    JupyterLab does); return what it printed (and the traceback of an error)."""
    import websocket

    base = f"{hub.url}/user/{learner.name}/api/kernels"
    auth = {"Authorization": f"token {learner.token}"}
    kernel = requests.post(base, json={"name": "python3"}, headers=auth, timeout=30)
    assert kernel.status_code == 201, f"{learner.name}'s server refused a kernel: {kernel.status_code} {kernel.text}"
    kernel_id = kernel.json()["id"]
    ws = websocket.create_connection(f"{hub.url.replace('http', 'ws', 1)}/user/{learner.name}/api/kernels/"
                                     f"{kernel_id}/channels", header=[f"Authorization: token {learner.token}"],
                                     timeout=timeout)
    msg_id, out = uuid.uuid4().hex, []
    try:
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": learner.name, "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    finally:
        ws.close()
        requests.delete(f"{base}/{kernel_id}", headers=auth, timeout=30)
    return "".join(out)


def free_ports(n: int) -> list[int]:
    from llmcourse.lab import free_port

    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture(scope="module")
def hub_class(tmp_path_factory):
    """The instructor's course with chapter 02 released (root-only), the shared folder, two learners with
    their servers started through the hub's API."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        _need("the JupyterHub test creates local accounts: run it as root")
    if not shutil.which("useradd") or not shutil.which("runuser"):
        _need("the JupyterHub test needs useradd and runuser (the passwd and util-linux packages)")
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("hub")
    course = new_course(tmp, [A02])  # the instructor's course folder: solutions/, and the lesson
    (course / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / f"{A02}.ipynb", course / "notebooks")
    llmcourse(course, "release", "02")
    shared = Path(tempfile.mkdtemp(prefix="llmcourse-hub-"))
    shared.chmod(0o755)
    learners, hub = [], None
    try:
        venv = learners_venv(shared)
        subprocess.run([sys.executable, str(DEPLOY / "release_tree.py"), str(course), str(shared / "course")],
                       check=True, capture_output=True)
        from llmcourse.cache import cache_dir

        hardlinked(cache_dir(), shared / "cache")
        suffix = secrets.token_hex(3)
        for name in ("alice", "bob"):
            learners.append(Learner(f"{name}{suffix}"))
        hub_port, api_port, proxy_port, grading_port = free_ports(4)
        env = dict(os.environ, LLMCOURSE_HUB_ROOT=str(shared), LLMCOURSE_HUB_VENV=str(venv),
                   LLMCOURSE_HUB_COURSE=str(shared / "course"), LLMCOURSE_HUB_CACHE=str(shared / "cache"),
                   LLMCOURSE_HUB_INSTRUCTOR=str(course), LLMCOURSE_HUB_STATE=str(tmp / "hub-state"),
                   LLMCOURSE_HUB_URL=f"http://127.0.0.1:{hub_port}", LLMCOURSE_HUB_API_PORT=str(api_port),
                   LLMCOURSE_HUB_PROXY_API_PORT=str(proxy_port), LLMCOURSE_HUB_GRADING_PORT=str(grading_port),
                   LLMCOURSE_HUB_GRADING_ARGS="--workers 2", LLMCOURSE_HUB_THREADS="1",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        hub = Hub(tmp, env, hub_port, course)
        hub.wait("the hub did not answer", lambda: hub.api("GET", ""))
        grading = f"{hub.url}/services/grading/"  # through the hub's proxy
        hub.wait("the grading service did not answer", lambda: requests.get(grading + "health", timeout=5).ok)
        for learner in learners:
            hub.api("POST", f"/users/{learner.name}", ok=(201, 409))
            learner.token = hub.api("POST", f"/users/{learner.name}/tokens",
                                    body={"note": "hub test", "expires_in": 900})["token"]
        spawns = [threading.Thread(target=hub.api, args=("POST", f"/users/{learner.name}/server"),
                                   kwargs={"ok": (201, 202)}) for learner in learners]  # both at once
        for spawn in spawns:
            spawn.start()
        for spawn in spawns:
            spawn.join()
        for learner in learners:
            hub.wait(f"{learner.name}'s server did not start",
                     lambda: hub.api("GET", f"/users/{learner.name}")["servers"].get("", {}).get("ready"), 90)
        yield {"hub": hub, "learners": learners, "course": course, "shared": shared, "grading": grading,
               "setup_s": time.monotonic() - started}
    finally:
        if hub is not None:
            hub.stop()
        for learner in learners:
            learner.delete()
        shutil.rmtree(shared, ignore_errors=True)


def test_a_learner_cannot_read_the_solutions_the_hidden_checks_or_the_gradebook(hub_class):
    alice, bob = hub_class["learners"]
    course = hub_class["course"]
    secrets_ = [course / "solutions" / A02 / "hidden_checks.py", course / "solutions" / A02 / f"{A02}.ipynb",
                course / "gradebook.db"]
    assert all(p.is_file() for p in secrets_)
    for path in secrets_:
        denied = alice.run("cat", str(path))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, path
    tree = hub_class["shared"] / "course"
    assert sorted(p.name for p in tree.iterdir()) == ["exercises", "notebooks"]
    assert alice.run("test", "-r", str(tree / "exercises" / A02 / f"{A02}.ipynb")).returncode == 0
    assert alice.run("touch", str(tree / "exercises" / "mine")).returncode != 0  # the tree is read-only
    assert alice.run("touch", str(hub_class["shared"] / "cache" / "mine")).returncode != 0  # the cache too
    # and from inside her server, as her notebooks' code runs
    probe = ("import os, json\n"
             f"paths = {[str(p) for p in secrets_] + [str(bob.home / 'my-work')]!r}\n"
             "def readable(p):\n"
             "    try:\n"
             "        open(p, 'rb').read(1) if os.path.isfile(p) else os.listdir(p)\n"
             "        return True\n"
             "    except OSError:\n"
             "        return False\n"
             "print(json.dumps({p: readable(p) for p in paths}))\n"
             "print(os.getcwd(), os.environ['LLMCOURSE_WORK_DIR'], os.environ['LLMCOURSE_COURSE_DIR'])\n")
    out = run_in_kernel(hub_class["hub"], alice, probe)
    readable = json.loads(out.splitlines()[0])
    assert not any(readable.values()), out
    assert str(alice.home) in out.splitlines()[1], out


def test_each_learner_has_a_copy_of_the_release_in_their_home(hub_class):
    alice, bob = hub_class["learners"]
    for learner in (alice, bob):
        for copy in (learner.home / "my-work" / A02 / f"{A02}.ipynb", learner.home / "my-work" / A02 / f"{A02}-lesson.ipynb"):
            assert copy.is_file() and copy.stat().st_uid == learner.uid


def test_a_learner_loads_the_models_from_the_shared_read_only_cache(hub_class):
    """Inside a learner's server the course's loaders read the one cache and write nothing into it; what a
    lesson keeps (cached_run) goes to the learner's own runs folder."""
    alice, _ = hub_class["learners"]
    cache = hub_class["shared"] / "cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    out = run_in_kernel(hub_class["hub"], alice, (
        "import torch\n"
        "from llmcourse.models import load_causal_lm\n"
        "from llmcourse.cache import cached_run\n"
        "tokenizer, model = load_causal_lm()\n"
        "ids = tokenizer('The capital of France is', return_tensors='pt').input_ids\n"
        "print('next:', repr(tokenizer.decode(model(ids).logits[0, -1].argmax())))\n"
        "cached_run('hub-test', {'n': 1}, lambda: {'x': torch.ones(2)})\n"))
    assert "next: ' Paris'" in out, out
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before
    assert list((alice.home / ".cache" / "llmcourse-runs").glob("hub-test-*.pt"))


def test_each_learner_submits_from_their_server_and_gets_their_own_grade(hub_class):
    """Alice's right answers and Bob's wrong softmax, saved into their copies through their servers (as
    JupyterLab saves) and submitted with `!llmcourse submit 02 --wait` in a notebook of each server: each
    grade reaches its learner, under the learner's hub identity, and the instructor's export agrees."""
    hub, course = hub_class["hub"], hub_class["course"]
    alice, bob = hub_class["learners"]
    source = nbformat.read(course / "solutions" / A02 / f"{A02}.ipynb", as_version=4)
    right = reference_answers(source)
    answers = {alice.name: right, bob.name: {**right, "softmax": WRONG_SOFTMAX}}
    for learner in (alice, bob):  # through the Jupyter server's contents API, as JupyterLab saves a notebook
        url = f"{hub.url}/user/{learner.name}/api/contents/my-work/{A02}/{A02}.ipynb"
        auth = {"Authorization": f"token {learner.token}"}
        mine = requests.get(url, headers=auth, timeout=30).json()["content"]
        saved = json.loads(filled(mine, answers[learner.name]))
        reply = requests.put(url, json={"type": "notebook", "format": "json", "content": saved}, headers=auth,
                             timeout=30)
        assert reply.status_code == 200, reply.text
    outputs = {}

    def submit(learner):
        outputs[learner.name] = run_in_kernel(hub, learner, "!llmcourse submit 02 --wait\n!llmcourse feedback 02\n")

    threads = [threading.Thread(target=submit, args=(learner,)) for learner in (alice, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    receipts = {}
    for learner, score in ((alice, TOTAL), (bob, WRONG_SCORE)):
        out = outputs[learner.name]
        found = re.search(r"^receipt (\S+): received", out, re.M)
        assert found, out
        receipts[learner.name] = found.group(1)
        assert re.search(rf"score {score:g}/{TOTAL:g}", out), out
        assert f"receipt {found.group(1)} counts: {score:g} points" in out, out  # llmcourse feedback 02
    assert "softmax" in outputs[bob.name] and "normalised over the whole tensor" in outputs[bob.name]
    stored = {p.parent.name for p in (course / "service" / "submissions" / A02).glob("*/*.ipynb")}
    assert stored == {alice.name, bob.name}
    llmcourse(course, "export", "--out", "grades.csv")
    with open(course / "grades.csv", newline="") as f:
        grades = {row["student_id"]: row for row in csv.DictReader(f) if row["assignment"] == A02}
    assert set(grades) == {alice.name, bob.name}
    for learner, score in ((alice, TOTAL), (bob, WRONG_SCORE)):
        row = grades[learner.name]
        assert float(row["score"]) == score and row["status"] == f"graded: receipt {receipts[learner.name]}", row
    hub_class["receipts"] = receipts


def test_a_learner_cannot_submit_as_or_read_the_other(hub_class):
    """From inside Alice's server, with her server's own token: Bob's receipt, his feedback, and a submission
    that names him are refused (403), and nothing is stored for him."""
    if "receipts" not in hub_class:
        pytest.skip("needs the receipts of the submission test")
    alice, bob = hub_class["learners"]
    course = hub_class["course"]
    before = sorted((course / "service" / "submissions" / A02).rglob("*.ipynb"))
    bob_receipt = hub_class["receipts"][bob.name]
    out = run_in_kernel(hub_class["hub"], alice, (
        "import os, json, urllib.request, urllib.error\n"
        "from llmcourse.workspace import work_copy\n"
        "base, token = os.environ['LLMCOURSE_SUBMIT_URL'], os.environ['JUPYTERHUB_API_TOKEN']\n"
        "def status(method, path, data=None, headers={}):\n"
        "    req = urllib.request.Request(base + path, data=data, method=method,\n"
        "                                 headers={'Authorization': f'token {token}', **headers})\n"
        "    try:\n"
        "        with urllib.request.urlopen(req, timeout=30) as reply:\n"
        "            return reply.status, json.load(reply)\n"
        "    except urllib.error.HTTPError as err:\n"
        "        return err.code, json.load(err)\n"
        "mine = work_copy('02').read_bytes()\n"
        "tries = {\n"
        f"    'receipt': status('GET', 'receipts/{bob_receipt}'),\n"
        f"    'feedback': status('GET', 'feedback/02?learner={bob.name}'),\n"
        f"    'submit-query': status('POST', 'submissions/02?student={bob.name}', mine),\n"
        f"    'submit-header': status('POST', 'submissions/02', mine, {{'X-Student': '{bob.name}'}}),\n"
        "    'own': status('GET', 'feedback/02'),\n"
        "}\n"
        "print(json.dumps({k: [code, body.get('learner')] for k, (code, body) in tries.items()}))\n"))
    tries = json.loads(out.strip().splitlines()[-1])
    assert {k: v[0] for k, v in tries.items()} == {"receipt": 403, "feedback": 403, "submit-query": 403,
                                                    "submit-header": 403, "own": 200}, out
    assert tries["own"][1] == alice.name
    assert sorted((course / "service" / "submissions" / A02).rglob("*.ipynb")) == before


def load_hub_config(env: dict):
    """deploy/jupyterhub/jupyterhub_config.py as JupyterHub loads it, with ``env`` as its environment."""
    from traitlets.config import Config

    config = Config()
    code = compile((DEPLOY / "jupyterhub_config.py").read_text(), str(DEPLOY / "jupyterhub_config.py"), "exec")
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        exec(code, {"get_config": lambda: config, "__file__": str(DEPLOY / "jupyterhub_config.py")})
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return config


@pytest.fixture
def srv():
    """A folder in /tmp that others may enter (pytest's own temporary folder is closed to them)."""
    folder = Path(tempfile.mkdtemp(prefix="llmcourse-srv-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_the_hub_configuration_refuses_what_would_show_learners_the_solutions(srv):
    """No root needed: the configuration's own checks, and what it gives the learners' servers."""
    tmp_path = srv
    shared = tmp_path / "srv"
    instructor, tree, venv, cache = shared / "instructor", shared / "course", shared / "venv", shared / "cache"
    for folder in (instructor, tree / "exercises", venv, cache):
        folder.mkdir(parents=True)
    (instructor / "nbgrader_config.py").write_text("")
    for folder in (tmp_path, shared, tree, tree / "exercises", venv, cache):
        folder.chmod(0o755)
    instructor.chmod(0o700)
    env = {"LLMCOURSE_HUB_ROOT": str(shared), "LLMCOURSE_HUB_STATE": str(tmp_path / "state")}
    config = load_hub_config(env)
    spawned = config.Spawner.environment
    assert spawned["LLMCOURSE_COURSE_DIR"] == str(tree) and spawned["LLMCOURSE_CACHE_DIR"] == str(cache)
    assert spawned["LLMCOURSE_WORK_DIR"] == "~/my-work" and spawned["PATH"].startswith(f"{venv}/bin:")
    assert spawned["LLMCOURSE_SUBMIT_URL"] == "http://127.0.0.1:8765/services/grading/"
    assert "PYTHONPATH" not in config.Spawner.env_keep and "PATH" not in config.Spawner.env_keep
    (service,) = config.JupyterHub.services
    assert service["name"] == "grading" and service["cwd"] == str(instructor)
    assert service["command"][1:5] == ["-m", "llmcourse.cli", "grade", "serve"]  # llmcourse grade serve
    instructor.chmod(0o755)  # other users could read the solutions and the gradebook
    with pytest.raises(SystemExit, match="chmod 700"):
        load_hub_config(env)
    instructor.chmod(0o700)
    (tree / "solutions").mkdir()
    with pytest.raises(SystemExit, match="release_tree.py"):
        load_hub_config(env)
