"""Run a learner's functions in a child process, isolated as far as the platform allows.

The grading process builds every case (hidden ones included) and sends them to the child; the child
loads the notebook's definitions (imports, functions, upper-case constants: nothing else runs), calls
each function on its cases and writes plain outputs back as JSON lines (no pickle). The verdict is
given in the grading process from those values, so nothing the notebook does in its own process can
change it, and a child that loops, exits or crashes costs only the exercise it was running.

Isolation, on Linux as root (``isolation_report()`` says what applies here):
- a private mount namespace: a private ``/tmp``, the course's secrets hidden (``solutions/``, the
  gradebook, submissions and other students' results), the course itself read-only;
- a private network namespace: no network;
- an unprivileged uid of its own, leased machine-wide for the child's lifetime (two graders on one
  machine never share one, so one's clean-up cannot kill the other's child), from a range that no account
  of the machine uses (``$LLMCOURSE_SANDBOX_UIDS``, checked with ``getent passwd``), so that ``RLIMIT_NPROC``
  bounds a fork loop, the child cannot write anything of root's, and the clean-up never reaches a learner's
  processes;
- resource limits: memory (``RLIMIT_AS``), processes, file size, open files, no core files;
- every process the child left behind killed afterwards.
Elsewhere the child runs as the current user with the memory and file limits only, and the report
says so plainly.
"""

import contextlib
import ctypes
import fcntl
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

UIDS_ENV = "LLMCOURSE_SANDBOX_UIDS"  # "FIRST-LAST": the uids leased to children, none of them an account's
DEFAULT_UIDS = range(61000, 63000)  # slot k prefers the range's k-th uid (no passwd entry needed)
UID_LOCKS = Path("/run/lock/llmcourse-uids") if Path("/run/lock").is_dir() else Path("/tmp/llmcourse-uids")
HIDDEN_IN_COURSE = ("solutions", "submitted", "autograded", "feedback", "collected", "release-history")
SECRET_FILES = ("gradebook.db",)
RUN_FOLDER = "llmcourse-grading-"  # + the grading process's pid: what a killed one leaves is swept at the next start
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


@dataclass
class Limits:
    """What one child may use. ``cell_timeout_s`` is the budget of one graded cell (one exercise's
    visible cases, or its hidden ones); the whole notebook gets ``load_timeout_s`` plus the sum."""

    cell_timeout_s: float = 30.0
    load_timeout_s: float = 120.0
    memory_gb: float = 2.0
    max_processes: int = 128  # threads count too
    max_file_bytes: int = 64 << 20
    max_output_bytes: int = 1 << 20  # what the child may print; kept in the child, never shown
    max_result_bytes: int = 8 << 20  # the JSON of one task's outcomes


@dataclass
class Task:
    """One graded cell's work: an exercise's name and the cases to run (visible or hidden)."""

    key: str  # "softmax" or "softmax:hidden"
    name: str
    cases: list


@dataclass
class Isolation:
    """What to hide from the child, and as whom to run it."""

    course_root: str | None = None  # its secrets are hidden and it is mounted read-only
    slot: int = 0
    enabled: bool = True


@dataclass
class ChildRun:
    """What came back: events per task key, and how the child ended."""

    events: list = field(default_factory=list)
    exit_code: int | None = None  # None when it was killed for running out of time
    signal: int | None = None
    timed_out: bool = False


# ---------------------------------------------------------------- what this platform can isolate

def can_isolate() -> bool:
    """True on Linux as root with mount and network namespaces available."""
    return sys.platform.startswith("linux") and os.geteuid() == 0 and hasattr(os, "fork")


def isolation_report(isolation: Isolation | None) -> list[str]:
    """Plain sentences about what isolates the submissions here (and what does not)."""
    if isolation is not None and isolation.enabled and can_isolate():
        return ["each submission runs in a child with its own mount and network namespaces (no network, a private "
                "/tmp, solutions/ and the gradebook hidden, the course read-only), as an unprivileged uid of its own "
                "(processes bounded by RLIMIT_NPROC), with memory, file-size and open-file limits; leftover "
                "processes are killed"]
    why = ("grading is not running as root on Linux" if isolation is None or isolation.enabled
           else "isolation was switched off")
    return [f"NOT ISOLATED ({why}): submissions run as the current user and could read solutions/ and hidden "
            f"checks, write the course and the gradebook, open network connections and fork without bound; only "
            f"the memory, file-size and time limits apply. Run `llmcourse grade autograde` as root on Linux to "
            f"isolate them."]


# ---------------------------------------------------------------- the child

class _CappedWriter:
    """Stands in for sys.stdout/sys.stderr: keeps the first ``limit`` characters, drops the rest."""

    def __init__(self, limit: int):
        self.limit, self.size = limit, 0

    def write(self, text):
        self.size += len(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None), f"mount {target}")


def _readable_paths() -> list[Path]:
    """What the child must read: the Python installation and the course's model cache."""
    from llmcourse.cache import cache_dir

    return [Path(p).resolve() for p in {sys.base_prefix, sys.prefix, str(cache_dir())}]


def _hide_except(libc, directory: Path, keep: list[Path], mode: str) -> None:
    """Mount an empty tmpfs over ``directory``, then bind back the ``keep`` paths inside it (read-only where
    ``readonly``), reached through file descriptors opened before they were hidden."""
    inside = [p for p in keep if directory in p.parents and p.exists()]
    fds = [os.open(p, os.O_PATH) for p in inside]
    try:
        _mount(libc, "tmpfs", str(directory), "tmpfs", 0, f"mode={mode},size=256m")
        for path, fd in zip(inside, fds):
            path.mkdir(parents=True, exist_ok=True)
            for parent in [q for q in path.parents if directory in q.parents]:
                parent.chmod(0o755)
            _mount(libc, f"/proc/self/fd/{fd}", str(path), None, MS_BIND | MS_REC)
    finally:
        for fd in fds:
            os.close(fd)


def _enter_namespaces(isolation: Isolation) -> None:
    """As root, in the child: new mount and network namespaces; secrets hidden, course read-only, private /tmp,
    root's home hidden but for the Python installation and the model cache (read-only)."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE)  # our mounts stay in this namespace
    root = Path(isolation.course_root).resolve() if isolation.course_root else None
    readable = _readable_paths() + ([root] if root else [])
    _hide_except(libc, Path("/tmp"), readable, "1777")
    home = Path.home().resolve()
    if home != Path("/"):
        _hide_except(libc, home, readable, "0755")
    if root:
        for name in HIDDEN_IN_COURSE:
            if (root / name).is_dir():
                _mount(libc, "tmpfs", str(root / name), "tmpfs", MS_RDONLY, "mode=0555,size=4k")
        for name in SECRET_FILES:
            if (root / name).is_file():
                _mount(libc, "/dev/null", str(root / name), None, MS_BIND)
        _mount(libc, str(root), str(root), None, MS_BIND | MS_REC)
        _mount(libc, "none", str(root), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for path in _readable_paths():  # the Python installation and the cache: read-only too
        if path.exists() and (root is None or root not in [path, *path.parents]):
            _mount(libc, str(path), str(path), None, MS_BIND | MS_REC)
            _mount(libc, "none", str(path), None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def _address_space_now() -> int:
    """This process's virtual size (bytes): what a forked child already maps (torch and its libraries)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _set_limits(limits: Limits, drop_uid: bool) -> None:
    memory = _address_space_now() + int(limits.memory_gb * (1 << 30))  # what the submission may add
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if drop_uid:  # as the current user this would count (and starve) every process of that user
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))


def _emit(stream, **event) -> None:
    stream.write(json.dumps({**event, "pid": os.getpid(), "t": time.time()}) + "\n")  # forked copies: other pids
    stream.flush()


def child_main(request: dict) -> None:
    """Everything the child does, in order: isolate, drop privileges, load the notebook, run the tasks."""
    from grader import values
    from grader.core import get_exercise, run_cases

    isolation: Isolation | None = request["isolation"]
    limits: Limits = request["limits"]
    events = os.fdopen(request["events_fd"], "w", buffering=1)
    try:
        os.setsid()  # its own process group: everything it starts can be killed with it
    except PermissionError:  # already a session leader (started with start_new_session)
        pass
    isolate = isolation is not None and isolation.enabled and can_isolate()
    if isolate:
        _enter_namespaces(isolation)
    workdir = Path(tempfile.mkdtemp(prefix="submission-"))
    notebook = workdir / request["notebook_name"]
    notebook.write_bytes(request["notebook_bytes"])
    if isolate:
        uid = request["uid"]
        for path in (workdir, notebook):
            os.chown(path, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _set_limits(limits, drop_uid=isolate)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update({"HOME": str(workdir), "TMPDIR": str(workdir), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                       "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"})
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = _CappedWriter(limits.max_output_bytes)
    sys.stdin = open(os.devnull)

    import torch

    torch.set_num_threads(1)
    from grader.notebook import load_definitions

    _emit(events, event="loading")
    loaded = load_definitions(notebook)
    _emit(events, event="loaded", problems=loaded.problems)
    for task in request["tasks"]:
        _emit(events, event="start", key=task.key)
        fn = loaded.function(task.name)
        if fn is None:
            _emit(events, event="missing", key=task.key, message=loaded.missing_message(task.name))
            continue
        exercise = get_exercise(task.name)
        outcomes = run_cases(fn, task.cases, exercise, budget_s=limits.cell_timeout_s)
        encoded = [{"status": o.status, "value": values.dumps(o.value), "error_type": o.error_type,
                    "message": o.message, "where": o.where, "observations": values.dumps(o.observations)}
                   for o in outcomes]
        text = json.dumps(encoded)
        if len(text) > limits.max_result_bytes:
            _emit(events, event="too_large", key=task.key, size=len(text))
        else:
            events.write(f'{{"event": "result", "key": {json.dumps(task.key)}, "pid": {os.getpid()}, '
                         f'"outcomes": {text}}}\n')
            events.flush()
    _emit(events, event="done")


def _child_entry(request: dict) -> int:
    """child_main, with a failure of the grading machinery itself reported as an event (for the instructor)."""
    try:
        child_main(request)
        return 0
    except BaseException as err:  # noqa: BLE001
        import traceback

        try:
            with os.fdopen(os.dup(request["events_fd"]), "w") as events:
                tail = "".join(traceback.format_exception(err)[-3:])
                events.write(json.dumps({"event": "crash", "message": tail[-2000:], "pid": os.getpid()}) + "\n")
        except OSError:
            pass
        return 70


# ---------------------------------------------------------------- the parent

def _read_events(path: Path, limit: int) -> list[dict]:
    """The child's own events (not those of copies it forked), the first one per task key."""
    events, seen, pid = [], set(), None
    with open(path, "rb") as f:
        data = f.read(limit)
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash, or garbage
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            continue
        pid = event.get("pid") if pid is None else pid
        if event.get("pid") != pid or (event["event"], event.get("key")) in seen:
            continue
        seen.add((event["event"], event.get("key")))
        events.append(event)
    return events


def _live_processes_of(uid: int) -> bool:
    """Whether any process (zombies aside) runs as ``uid``."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # it ended while we looked
        if fields.get("Uid", "").split()[:1] == [str(uid)] and not fields.get("State", "").strip().startswith("Z"):
            return True
    return False


def _kill_leftovers(pid: int, uid: int | None) -> None:
    """Kill the child's process group, and (when it ran as its own uid) every process of that uid."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is None:
        return
    for _ in range(20):  # a fork loop may start new ones while the kernel walks the list
        if not _live_processes_of(uid):
            return
        killer = os.fork()
        if killer == 0:
            try:
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(killer, 0)


def _wait(pid: int, deadline: float) -> tuple[int | None, int | None, bool]:
    """Wait for ``pid`` until ``deadline``; kill it after. Returns (exit code, signal, timed out)."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return None, os.WTERMSIG(status), False
            return os.WEXITSTATUS(status), None, False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, signal.SIGKILL, True
        time.sleep(0.01)


class SandboxUidsTaken(RuntimeError):
    """The sandbox's uid range holds accounts of this machine: cleaning up after a child would kill theirs."""


def sandbox_uids() -> range:
    """The uids leased to children: ``$LLMCOURSE_SANDBOX_UIDS`` ("FIRST-LAST", inclusive), else 61000-62999."""
    text = os.environ.get(UIDS_ENV, "").strip()
    if not text:
        return DEFAULT_UIDS
    first, _, last = text.partition("-")
    try:
        uids = range(int(first), int(last) + 1)
    except ValueError:
        uids = range(0)
    if not uids or uids.start < 1000:
        raise ValueError(f"{UIDS_ENV}={text!r}: give a range FIRST-LAST of unused uids above 999, e.g. 61000-62999")
    return uids


def system_account_uids() -> dict[int, str]:
    """uid -> name of every account the system knows (``getent passwd``: local files, LDAP, ...)."""
    listing = subprocess.run(["getent", "passwd"], capture_output=True, text=True, check=False).stdout
    accounts = {}
    for line in listing.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            accounts[int(fields[2])] = fields[0]
    return accounts


def checked_sandbox_uids() -> range:
    """``sandbox_uids()``, after making sure no account of this machine has one of them: after grading, every
    process of a leased uid is killed, which must never reach a learner's (say, on a JupyterHub)."""
    uids = sandbox_uids()
    taken = {uid: name for uid, name in system_account_uids().items() if uid in uids}
    if taken:
        listed = ", ".join(f"{name} ({uid})" for uid, name in sorted(taken.items())[:5])
        raise SandboxUidsTaken(
            f"the grading sandbox's uids {uids.start}-{uids.stop - 1} include accounts of this machine: {listed}"
            f"{' ...' if len(taken) > 5 else ''}. Grading kills every process of the uid it used, so set "
            f"{UIDS_ENV}=FIRST-LAST to a range no account uses.")
    return uids


@contextlib.contextmanager
def _uid_lease(slot: int):
    """A uid no other child on this machine runs as until we are done (an exclusive ``flock`` per uid).

    Tries the slot's own uid first; the lock is released when the leftovers of the child are killed."""
    uids = checked_sandbox_uids()
    UID_LOCKS.mkdir(mode=0o700, parents=True, exist_ok=True)
    for k in range(len(uids)):
        uid = uids[(slot + k) % len(uids)]
        lock = os.open(UID_LOCKS / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue
        try:
            yield uid
        finally:
            os.close(lock)
        return
    raise RuntimeError(f"every uid in {uids.start}..{uids.stop - 1} is in use by another grader")


def _fork_child(request: dict, budget: float) -> tuple[int, tuple[int | None, int | None, bool]]:
    """Fork a child that runs ``request``; returns its pid and how it ended."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        os._exit(_child_entry(request))
    os.close(request["events_fd"])
    return pid, _wait(pid, time.monotonic() + budget)


def _spawn_child(request: dict, tmp: str, events_path: Path, budget: float) -> tuple[int, tuple]:
    """Start a fresh interpreter that runs ``request``; returns its pid and how it ended."""
    request_path = Path(tmp) / "request.pickle"
    request_path.write_bytes(pickle.dumps({**request, "events_fd": None}))
    with open(events_path, "ab") as events:
        proc = subprocess.Popen([sys.executable, "-m", "grader.sandbox", str(request_path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=(events.fileno(),),
                                env={**os.environ, "LLMCOURSE_EVENTS_FD": str(events.fileno())},
                                start_new_session=True)
    os.close(request["events_fd"])
    try:
        proc.wait(timeout=budget)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        timed_out = True
    code = proc.returncode
    return proc.pid, (code if code >= 0 else None, -code if code < 0 else None, timed_out)


def run_child(notebook_bytes: bytes, notebook_name: str, tasks: list[Task], limits: Limits,
              isolation: Isolation | None, mode: str = "fork") -> ChildRun:
    """Run ``tasks`` on the functions of a notebook in one child; return its events and how it ended.

    ``mode="fork"`` (Linux) forks this process, which has imported torch and the grader already;
    ``mode="spawn"`` starts a fresh interpreter (any platform)."""
    isolate = isolation is not None and isolation.enabled and can_isolate()
    with tempfile.TemporaryDirectory(prefix=f"{RUN_FOLDER}{os.getpid()}-") as tmp, \
            (_uid_lease(isolation.slot) if isolate else contextlib.nullcontext()) as uid:
        events_path = Path(tmp) / "events.jsonl"
        fd = os.open(events_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        budget = limits.load_timeout_s + limits.cell_timeout_s * len(tasks) * 1.5
        request = {"notebook_bytes": notebook_bytes, "notebook_name": notebook_name, "tasks": tasks,
                   "limits": limits, "isolation": isolation, "events_fd": fd, "uid": uid}
        if mode == "fork":
            pid, (exit_code, sig, timed_out) = _fork_child(request, budget)
        else:
            pid, (exit_code, sig, timed_out) = _spawn_child(request, tmp, events_path, budget)
        _kill_leftovers(pid, uid)
        events = _read_events(events_path, limit=limits.max_result_bytes * (len(tasks) + 1))
    return ChildRun(events, exit_code, sig, timed_out)


def sweep_run_folders() -> int:
    """Remove the run folders of grading processes that died mid-grade (killed: their ``with`` never ended);
    the folder names its process. Returns how many were removed."""
    if not Path("/proc/self").exists():  # no way to tell a dead process here: nothing is removed
        return 0
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{RUN_FOLDER}*-*"):
        pid = folder.name[len(RUN_FOLDER):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def describe_end(run: ChildRun, limits: Limits) -> str:
    """Why a child stopped early, in words for the feedback and the class report."""
    if run.timed_out:
        return f"timed out (no result within the time limit; {limits.cell_timeout_s:g} s per graded cell)"
    if run.signal == signal.SIGKILL:
        return "the process was killed (out of memory?)"
    if run.signal is not None:
        name = signal.Signals(run.signal).name if run.signal in signal.Signals._value2member_map_ else run.signal
        return f"the process crashed ({name})"
    return (f"the process exited (exit code {run.exit_code}): does the code call exit(), sys.exit() or os._exit(), "
            f"or crash Python?")


if __name__ == "__main__":
    request = pickle.loads(Path(sys.argv[1]).read_bytes())
    request["events_fd"] = int(os.environ.pop("LLMCOURSE_EVENTS_FD"))
    sys.exit(_child_entry(request))
