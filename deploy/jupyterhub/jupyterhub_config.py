"""JupyterHub for a class of the LLM course on one machine (README, "Run a class").

Learners log in with their local accounts (PAM). Each learner's server runs as that learner, in their home,
from one shared virtualenv; the course they see is one read-only release-only tree (exercises and lessons,
no solutions, no gradebook), the models come from one read-only cache, and their own copies (``my-work/``)
and the runs the lessons keep are in their home. The grading service (``llmcourse grade serve``) runs as a
hub service, as root, in the instructor's course folder: ``llmcourse submit 02`` in a learner's terminal or
notebook sends their saved copy, and the hub tells the service who sent it.

    sudo jupyterhub -f deploy/jupyterhub/jupyterhub_config.py

Every path and port is read from an environment variable here (defaults in brackets):

LLMCOURSE_HUB_ROOT        [/srv/llmcourse] the folder that holds the defaults below
LLMCOURSE_HUB_VENV        [ROOT/venv] the virtualenv every learner's server runs (jupyterhub and the course
                          installed; readable by all)
LLMCOURSE_HUB_COURSE      [ROOT/course] the learners' release-only tree (deploy/jupyterhub/release_tree.py
                          builds it; the hub refuses a tree that holds solutions/ or a gradebook)
LLMCOURSE_HUB_CACHE       [ROOT/cache] the model cache, filled once by `llmcourse fetch`, readable by all,
                          writable by nobody else
LLMCOURSE_HUB_INSTRUCTOR  [ROOT/instructor] the instructor's course folder (solutions/, nbgrader_config.py,
                          gradebook.db): the grading service's working folder; the hub refuses to start while
                          other users can enter it
LLMCOURSE_HUB_STATE       [ROOT/hub] the hub's database and cookie secret (created 0700)
LLMCOURSE_HUB_URL         [http://127.0.0.1:8000] where learners reach the hub (behind a TLS proxy, or
                          https with LLMCOURSE_HUB_SSL_CERT and LLMCOURSE_HUB_SSL_KEY)
LLMCOURSE_HUB_API_PORT    [8081] the hub's internal API (127.0.0.1)
LLMCOURSE_HUB_PROXY_API_PORT [8001] the proxy's internal API (127.0.0.1)
LLMCOURSE_HUB_GRADING_PORT   [8765] the grading service (127.0.0.1)
LLMCOURSE_HUB_GRADING_ARGS   [--workers 2] more arguments of `llmcourse grade serve` (--cell-timeout S, ...)
LLMCOURSE_HUB_GRADER_PYTHON  [this hub's interpreter] the interpreter that runs the grading service
LLMCOURSE_HUB_GROUP       [llmcourse] the Unix group whose members may log in
LLMCOURSE_HUB_ADMINS      [] comma-separated hub admins (they can start and stop learners' servers)
LLMCOURSE_HUB_THREADS     [2] threads per learner's process (OMP_NUM_THREADS: N learners share the cores)
"""

import os
import shlex
import stat
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (JupyterHub's config loader defines it)


def setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


ROOT = setting("LLMCOURSE_HUB_ROOT", "/srv/llmcourse")
VENV = setting("LLMCOURSE_HUB_VENV", f"{ROOT}/venv")
COURSE = setting("LLMCOURSE_HUB_COURSE", f"{ROOT}/course")
CACHE = setting("LLMCOURSE_HUB_CACHE", f"{ROOT}/cache")
INSTRUCTOR = setting("LLMCOURSE_HUB_INSTRUCTOR", f"{ROOT}/instructor")
STATE = setting("LLMCOURSE_HUB_STATE", f"{ROOT}/hub")
HUB_URL = setting("LLMCOURSE_HUB_URL", "http://127.0.0.1:8000")
API_PORT = int(setting("LLMCOURSE_HUB_API_PORT", "8081"))
PROXY_API_PORT = int(setting("LLMCOURSE_HUB_PROXY_API_PORT", "8001"))
GRADING_PORT = int(setting("LLMCOURSE_HUB_GRADING_PORT", "8765"))
GRADING_ARGS = shlex.split(setting("LLMCOURSE_HUB_GRADING_ARGS", "--workers 2"))
GRADER_PYTHON = setting("LLMCOURSE_HUB_GRADER_PYTHON", sys.executable)
GROUP = setting("LLMCOURSE_HUB_GROUP", "llmcourse")
ADMINS = {name.strip() for name in setting("LLMCOURSE_HUB_ADMINS", "").split(",") if name.strip()}
THREADS = setting("LLMCOURSE_HUB_THREADS", "2")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


# --- what must hold before any learner gets a server -------------------------------------------------------

def others_can_enter(path: Path) -> bool:
    """True when a user who is neither the owner nor in the group can reach ``path`` (every folder on the way
    lets others through)."""
    path = path.resolve()
    return all(os.stat(folder).st_mode & stat.S_IXOTH for folder in (*reversed(path.parents), path))


if not Path(INSTRUCTOR, "nbgrader_config.py").is_file():
    raise SystemExit(f"LLMCOURSE_HUB_INSTRUCTOR={INSTRUCTOR} is not a course folder (no nbgrader_config.py)")
if others_can_enter(Path(INSTRUCTOR)):
    raise SystemExit(f"learners could read the solutions and the gradebook in {INSTRUCTOR}: chmod 700 {INSTRUCTOR}")
leaks = [name for name in ("solutions", "gradebook.db", "nbgrader_config.py") if Path(COURSE, name).exists()]
if leaks or any(Path(COURSE).rglob("hidden_checks.py")):
    raise SystemExit(f"the learners' tree {COURSE} holds {', '.join(leaks) or 'hidden checks'}: build it with "
                     f"deploy/jupyterhub/release_tree.py")
for what, path in (("LLMCOURSE_HUB_COURSE", COURSE), ("LLMCOURSE_HUB_CACHE", CACHE), ("LLMCOURSE_HUB_VENV", VENV)):
    if not others_can_enter(Path(path)):
        raise SystemExit(f"{what}={path}: learners cannot enter it (a folder on the way is closed to others)")
os.makedirs(STATE, mode=0o700, exist_ok=True)


# --- the hub and its proxy: loopback only, but for the public URL ------------------------------------------

c.JupyterHub.bind_url = HUB_URL
if os.environ.get("LLMCOURSE_HUB_SSL_CERT"):
    c.JupyterHub.ssl_cert = os.environ["LLMCOURSE_HUB_SSL_CERT"]
    c.JupyterHub.ssl_key = os.environ["LLMCOURSE_HUB_SSL_KEY"]
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{API_PORT}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PROXY_API_PORT}"
beside = Path(sys.executable).parent / "configurable-http-proxy"  # the PyPI wheel's, in the hub's environment
c.ConfigurableHTTPProxy.command = [str(beside) if beside.exists() else "configurable-http-proxy"]
c.ConfigurableHTTPProxy.pid_file = f"{STATE}/proxy.pid"
c.JupyterHub.db_url = f"sqlite:///{STATE}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{STATE}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = f"{STATE}/jupyterhub.pid"

# --- who may log in: local accounts in the class's group ---------------------------------------------------

c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {GROUP}
c.Authenticator.admin_users = ADMINS

# --- each learner's server: as the learner, in their home, from the shared virtualenv ----------------------

c.JupyterHub.spawner_class = "localprocess"
# what the learner writes is theirs alone (umask 077: my-work/ is 0700 even where homes are 0755, Debian's
# default); first the learner's own copies of every released chapter (`llmcourse start all`: once each, never
# overwriting; a chapter released later is copied at the next start), then the Jupyter server
c.Spawner.cmd = ["/bin/sh", "-c",
                 'umask 077; llmcourse start all || echo "llmcourse start all failed: run it in a terminal" >&2; '
                 'exec python -m jupyterhub.singleuser "$@"', "jupyterhub-singleuser"]
c.Spawner.default_url = "/lab/tree/my-work"
c.Spawner.env_keep = ["LANG", "LC_ALL"]  # not the hub's PATH or PYTHONPATH: the learner's come from below
c.Spawner.environment = {
    "PATH": f"{VENV}/bin:{SYSTEM_PATH}",
    "VIRTUAL_ENV": VENV,
    "LLMCOURSE_COURSE_DIR": COURSE,  # the release-only tree (llmcourse/workspace.py)
    "LLMCOURSE_WORK_DIR": "~/my-work",  # the learner's copies, in their home
    "LLMCOURSE_CACHE_DIR": CACHE,  # models and data, shared and read-only
    "LLMCOURSE_RUNS_DIR": "~/.cache/llmcourse-runs",  # what the lessons train and keep (llmcourse/cache.py)
    "LLMCOURSE_SUBMIT_URL": f"http://127.0.0.1:{GRADING_PORT}/services/grading/",  # `llmcourse submit`
    "OMP_NUM_THREADS": THREADS,
}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60

# --- the grading service: root, in the instructor's course folder, grading in the sandbox ------------------

c.JupyterHub.services = [{
    "name": "grading",
    "url": f"http://127.0.0.1:{GRADING_PORT}",  # the service binds this; the proxy serves /services/grading/
    "command": [GRADER_PYTHON, "-m", "llmcourse.cli", "grade", "serve", *GRADING_ARGS],  # llmcourse grade serve
    "cwd": INSTRUCTOR,
    "environment": {
        "PATH": f"{Path(GRADER_PYTHON).parent}:/usr/local/sbin:/usr/sbin:/sbin:{SYSTEM_PATH}",
        "LLMCOURSE_CACHE_DIR": CACHE,  # the checks that build a model read the same cache
    },
    "display": False,  # an API for `llmcourse submit`, not a page for the hub's menu
}]
