"""``llmcourse grade autograde``: grade every collected submission of an assignment, N at a time.

Workers (local processes, or Dask workers with ``--scheduler``) grade submissions from plain data and
return plain results; this process alone writes the gradebook, one result at a time, as they arrive.
Re-running skips what is graded and unchanged, so an interrupted run resumes where it stopped.
"""

import hashlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from grader.autograde import GradeJob, SubmissionResult, fingerprint, grade_submission, warm_imports
from grader.classroom.course import Course, CourseError
from grader.sandbox import (Isolation, Limits, SandboxUidsTaken, can_isolate, checked_sandbox_uids, isolation_report,
                            sweep_run_folders)

_SLOT = 0  # this worker process's slot: its children prefer the sandbox range's slot-th uid (leased, see sandbox)


def _init_worker(counter) -> None:
    """In each local worker: a slot of its own, torch on one thread (children are forked from here), the
    checks imported once; on Linux, death with the process that started it."""
    global _SLOT
    _die_with_parent()
    with counter.get_lock():
        _SLOT = counter.value
        counter.value += 1
    _prepare_process()


def _die_with_parent() -> None:
    """Linux: this worker is killed when its parent dies. A forked worker holds both ends of the pool's queue, so
    it never sees the parent go: a grading service that crashed (or was killed) left its idle workers, each
    holding torch (about 300 MB), behind for good, two more at every crash."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = multiprocessing.parent_process()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent.pid:  # the parent died before the call
        os._exit(1)


def _prepare_process() -> None:
    """Once per worker: what every forked child would otherwise pay for again (torch, the checks, nbformat's
    compiled schema validator)."""
    import nbformat
    import torch

    import grader.notebook  # noqa: F401  (imported here, inherited by the forked children)
    from grader.checks import register_all

    register_all()

    torch.set_num_threads(1)  # no OpenMP pool before fork(): children are forked from this process
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))


def _grade_locally(job: GradeJob) -> dict:
    return grade_submission(job, _SLOT)


def _grade_on_dask(job: GradeJob) -> dict:
    """A Dask task: the slot comes from the worker's name, so that two workers never share a uid."""
    from distributed import get_worker

    name = get_worker().name
    slot = name if isinstance(name, int) else int(hashlib.sha1(str(name).encode()).hexdigest(), 16) % 900
    _prepare_process()
    return grade_submission(job, 100 + slot)


@dataclass
class AutogradeSummary:
    assignment: str
    graded: list = field(default_factory=list)  # SubmissionResult of this run
    skipped: list = field(default_factory=list)  # students graded before and unchanged
    isolation: list = field(default_factory=list)
    seconds: float = 0.0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_jobs(course: Course, assignment: str, limits: Limits, isolate: bool, force: bool):
    """(jobs to grade, students skipped as graded and unchanged, the fingerprint of the checks)."""
    source, release, hidden = course.grading_texts(assignment)
    stamp = fingerprint(assignment[:2], source, release, hidden)
    jobs, skipped = [], []
    for student, path in course.submissions(assignment).items():
        data = path.read_bytes()
        if not force and course.is_graded(student, assignment, _sha(data), stamp):
            skipped.append(student)
            continue
        jobs.append(GradeJob(assignment, student, data, source, release, hidden, limits, str(course.root), isolate))
    return jobs, skipped, stamp


def _results(jobs: list, workers: int, scheduler: str | None):
    """(job, result dict or exception) as each job finishes, from the chosen executor."""
    if scheduler:
        from distributed import Client, as_completed as dask_completed

        with Client(scheduler) as client:
            futures = {client.submit(_grade_on_dask, job, pure=False): job for job in jobs}
            for future in dask_completed(futures):
                try:
                    yield futures[future], future.result()
                except Exception as err:  # a worker lost: recorded, the batch goes on
                    yield futures[future], err
        return
    if workers <= 1:
        _prepare_process()
        for job in jobs:
            try:
                yield job, grade_submission(job, 0)
            except Exception as err:
                yield job, err
        return
    # On Linux the workers are forked from this process once it has imported torch and the checks, so they
    # start warm; elsewhere they are spawned and import them themselves.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    if context.get_start_method() == "fork":
        import nbformat

        _prepare_process()
        if jobs:
            warm_imports(nbformat.reads(jobs[0].release_notebook, as_version=4))
    counter = context.Value("i", 0)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(counter,)) as pool:
        futures = {pool.submit(_grade_locally, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as err:
                yield futures[future], err


def autograde(course: Course, assignment: str, workers: int | None = None, scheduler: str | None = None,
              limits: Limits | None = None, isolate: bool = True, force: bool = False,
              progress: bool = True) -> AutogradeSummary:
    """Grade every collected, not yet graded (or changed) submission of ``assignment``."""
    import time

    from tqdm.auto import tqdm

    if not course.is_released(assignment):
        raise CourseError(f"{assignment} is not released yet (no release or no gradebook entry): run "
                          f"`llmcourse grade release {assignment[:2]}` first")
    if isolate and can_isolate():  # before anything runs: the uids must be no account's (see sandbox)
        try:
            checked_sandbox_uids()
        except (SandboxUidsTaken, ValueError) as err:
            raise CourseError(str(err)) from None
    sweep_run_folders()
    start = time.perf_counter()
    limits = limits or Limits()
    workers = workers or os.cpu_count() or 1
    jobs, skipped, stamp = make_jobs(course, assignment, limits, isolate, force)
    summary = AutogradeSummary(assignment, skipped=skipped,
                               isolation=isolation_report(Isolation(str(course.root), enabled=isolate)))
    with tqdm(total=len(jobs), desc=f"grading {assignment}", unit="submission", disable=not progress) as bar:
        for job, outcome in _results(jobs, workers, scheduler):
            if isinstance(outcome, Exception):  # the grading machinery failed, not the submission: regraded next run
                result = SubmissionResult(job.assignment, job.student,
                                          f"error: the grader failed ({type(outcome).__name__}: {outcome}); "
                                          f"run autograde again")
            else:
                result = SubmissionResult.from_dict(outcome)
            course.save_result(result, _sha(job.notebook_bytes), stamp)
            summary.graded.append(result)
            bar.update()
    summary.seconds = time.perf_counter() - start
    return summary
