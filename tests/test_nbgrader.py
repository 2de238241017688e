"""The grading round trip of every chapter: release, submit, autograde, feedback, export.

Every chapter goes through `llmcourse grade` (the learner's functions in a sandboxed child, the verdicts in the
grader); one chapter also goes end to end through plain `nbgrader autograde`, which executes whole notebooks,
and both must give the same scores. Each chapter proves: the release holds no solution or hidden test; the
reference gets full marks, the stub 0, a named wrong answer exact partial marks; feedback shows no hidden case
but names the mistake; where the chapter forbids a library function, a submission that calls it is refused.
"""

import csv
import filecmp
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from course_tools import llmcourse, new_course

from grader.core import get_exercise

pytestmark = pytest.mark.xdist_group("nbgrader")  # one worker grades the eleven chapters once
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Round:
    """One assignment's round trip: a wrong submission (one edit of a reference answer) and the scores."""

    grade_id: str  # the solution cell that the wrong submission edits
    old: str
    new: str
    total: float
    wrong_score: float
    mistake: str  # the diagnosis the wrong submission's feedback must show


ROUNDS = {
    # transformer_param_count 3+1, plan_training 3+1, semantic_search 2+1; 2 FLOPs per parameter and token (the
    # forward pass alone) loses plan_training's 4 (the payoff cells that plan GPT-3's run with it are not graded)
    "01-transformer-era": Round("plan_training", "budget / (6 * n_params)", "budget / (2 * n_params)", 11, 7,
                                "counted 2 FLOPs per parameter and token"),
    # softmax 2+1, causal_mask 1+1, scaled_dot_product_attention 3+2, self_attention 2+1; unscaled attention
    # loses its own 5 points and self_attention's 3 (it calls the attention)
    "02-self-attention": Round("scaled_dot_product_attention", " / math.sqrt(d_k)", "", 13, 5,
                               "no 1/sqrt(d_k) scaling"),
    # split 1+1, merge 1+1, multi_head_attention 3+2, layer_norm 2+1, feed_forward 1+1, bert_layer 3+2; no output
    # projection loses multi_head_attention's 5 and bert_layer's 5 (it calls multi_head_attention)
    "03-multi-head-attention": Round("multi_head_attention", ' @ p["w_o"].T + p["b_o"]', "", 19, 9,
                                     "no output projection"),
    # mask_tokens 3+2, evaluate 3+1, train_epoch 3+2; dropping the zero_grad line loses train_epoch's 5
    # (the payoff cells that fine-tune MiniLM with it are not graded)
    "04-transfer-learning": Round("train_epoch", "optimizer.zero_grad()  # the next", "# the next", 14, 9,
                                  "optimizer.zero_grad forgotten"),
    # sequence_logprob 2+1, greedy_decode 2+1, beam_search 3+2, top_k_filter 1+1, top_p_filter 3+1,
    # sample_next_token 2+1, classify_by_likelihood 2+1; scoring token t with the logits at t loses
    # sequence_logprob's 3 and classify_by_likelihood's 3 (it calls sequence_logprob)
    "05-gpt-and-prompting": Round("sequence_logprob", "logprobs[prompt_length - 1:-1]", "logprobs[prompt_length:]",
                                  23, 17, "off by one position"),
    # pronoun_log_odds 3+2, weat_effect_size 3+1, lowest_carbon_plan 3+2; the population standard deviation
    # loses weat_effect_size's 4 (the payoff cells are not graded)
    "06-bias-and-cost": Round("weat_effect_size", ".std(correction=1)", ".std(correction=0)", 14, 10,
                              "population standard deviation"),
    # top_k_gating 2+1, moe_forward 3+2, load_balancing_loss 2+1, moe_param_counts 2+1, pipeline_schedule 3+2; gates
    # not renormalised lose top_k_gating's 3 and moe_forward's 5 (it calls it)
    "07-experts-and-scale": Round("top_k_gating", "gates / gates.sum(dim=-1, keepdim=True), indices",
                                  "gates, indices", 19, 11, "gates not renormalised"),
    # fit_power_law 2+1, compute_optimal 2+1, fit_chinchilla 3+2; C = N D without the 6 loses compute_optimal's 3
    # (the payoff cells that draw the frontier with it are not graded)
    "08-scaling-laws": Round("compute_optimal", "compute_flops / 6", "compute_flops", 11, 8,
                             "C = N D without the 6"),
    # score_choices 4+2, multiple_choice_grade 2+1, grade_chain_of_thought 2+1; the prompt's cache handed to every
    # choice without a copy loses score_choices' 6 (the payoff cells that run it on SmolLM2 are not graded)
    "09-evaluating-llms": Round("score_choices", "copy.deepcopy(prompt_cache)", "prompt_cache", 12, 6,
                               "reused without copying"),
    # largest_batch 2+1, tokenizer_fertility 2+1, dequantize 2+1, absmax_quantize 4+2; dividing by 2^(bits-1)
    # instead of 2^(bits-1) - 1 loses absmax_quantize's 6 (dequantize does not call it)
    "10-open-models": Round("absmax_quantize", "2 ** (bits - 1) - 1", "2 ** (bits - 1)", 15, 9,
                            "one level outside the range"),
    # response_only_labels 2+1, add_lora 3+2, reward_model_step 2+1, dpo_loss 4+2; scoring each label with the
    # logits at its own position loses dpo_loss's 6 (the payoff cells that run DPO on SmolLM2 with it are not graded)
    "11-instruction-tuning": Round("dpo_loss", "logits[:, :-1], labels[:, 1:]", "logits, labels", 17, 11, "no shift"),
}
STUDENTS = ("ref", "stub", "wrong")
# A submission that calls the function its exercise rebuilds is refused, in both graders. Chapter 02's softmax through
# torch.softmax loses softmax's 3 points, and attention's 5 and self_attention's 3, which call it: 2 of 13 remain.
# The others: (grade_id, answer, what the feedback names); the exercise's visible and hidden cells score 0.
FORBIDDEN = {
    "02-self-attention": ("softmax", "def softmax(x, dim=-1):\n    return torch.softmax(x, dim=dim)", "calls `torch.softmax`"),
    "03-multi-head-attention": ("layer_norm", "def layer_norm(x, weight, bias, eps=1e-5):\n    return "
                                "torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps)", "calls `F.layer_norm`"),
    "04-transfer-learning": ("evaluate", "def evaluate(model, batches):\n    from llmcourse.finetune import predict\n"
                             "    logits, labels = predict(model, list(batches))\n    return {\"loss\": "
                             "torch.nn.functional.cross_entropy(logits, labels).item(), \"accuracy\": "
                             "(logits.argmax(-1) == labels).float().mean().item(), \"examples\": len(labels)}",
                             "calls `llmcourse.finetune.predict`"),
    "05-gpt-and-prompting": ("top_k_filter", "def top_k_filter(logits, k):\n    from transformers import TopKLogitsWarper\n"
                             "    return TopKLogitsWarper(k)(None, logits)", "calls `TopKLogitsWarper`"),
    "09-evaluating-llms": ("score_choices", "def score_choices(model, tokenizer, prompt, choices, length_normalize=False):"
                           "\n    from llmcourse.evaluation import choice_logprobs\n    return choice_logprobs(model, "
                           "tokenizer, prompt, choices)", "calls `llmcourse.evaluation.choice_logprobs`"),
    "10-open-models": ("absmax_quantize", "def absmax_quantize(w, bits=8, block_size=None):\n    scale = "
                       "w.abs().max().item() / (2 ** (bits - 1) - 1)\n    return torch.quantize_per_tensor(w, scale, 0, "
                       "torch.qint8).int_repr(), scale", "calls `torch.quantize_per_tensor`"),
}
# (11-instruction-tuning's add_lora forbids peft, which is not among the course's dependencies:
# tests/test_forbidden.py tests that refusal wherever peft is importable.)
FORBIDDEN_02_SCORE = 2.0
# Plain `nbgrader autograde` (it executes every cell of each notebook) grades this chapter end to end;
# `llmcourse grade` grades every chapter, this one included, and the two must agree on every score.
NBGRADER_CHAPTER = "02-self-attention"


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    # quick mode, as every notebook in the suite: autograde executes the whole notebook, payoff cells included
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", LLMCOURSE_QUICK="1")
    proc = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def solution_code(source_nb) -> dict[str, str]:
    """grade_id -> the reference code of each solution cell (markers removed)."""
    return {c.metadata["nbgrader"]["grade_id"]: re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", "", c.source, flags=re.M)
            for c in source_nb.cells if c.metadata.get("nbgrader", {}).get("solution")}


def submit_all(course: Path, assignment: str) -> list[str]:
    """Write into submitted/ (as nbgrader's collect leaves them) the reference answers, the untouched stub, the
    round's wrong answer, and (where the chapter forbids something) an answer that calls the forbidden function,
    each filled into the course's release; returns the students."""
    release = read(course / "exercises" / assignment / f"{assignment}.ipynb")
    reference = solution_code(read(course / "solutions" / assignment / f"{assignment}.ipynb"))
    spec = ROUNDS[assignment]
    wrong = reference[spec.grade_id].replace(spec.old, spec.new)
    assert wrong != reference[spec.grade_id], f"{assignment}: the wrong submission's edit does not apply"
    answers = {"ref": reference, "stub": {}, "wrong": {**reference, spec.grade_id: wrong}}
    if assignment in FORBIDDEN:
        grade_id, answer, _ = FORBIDDEN[assignment]
        answers["forbidden"] = {**reference, grade_id: answer}
    for student, by_cell in answers.items():
        nb = nbformat.from_dict(json.loads(json.dumps(release)))  # a deep copy
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in by_cell:
                cell.source = by_cell[grade_id]
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{assignment}.ipynb")
    return list(answers)


def read(path: Path):
    return nbformat.read(path, as_version=4)


@pytest.fixture(scope="module")
def nbgrader_course(tmp_path_factory):
    """NBGRADER_CHAPTER released, submitted, autograded, fed back and exported with nbgrader's own commands."""
    course = new_course(tmp_path_factory.mktemp("nbgrader"), [NBGRADER_CHAPTER])
    nbgrader(course, "generate_assignment", NBGRADER_CHAPTER, "--force")
    for student in submit_all(course, NBGRADER_CHAPTER):
        nbgrader(course, "db", "student", "add", student)
    nbgrader(course, "autograde", NBGRADER_CHAPTER)
    nbgrader(course, "generate_feedback", NBGRADER_CHAPTER)
    nbgrader(course, "export")
    return course


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory):
    """Every assignment of ROUNDS through `llmcourse grade`, each step once for all of them: release, autograde,
    feedback, export. Submissions are placed in submitted/ as nbgrader's collect leaves them (`llmcourse grade
    collect` has its own tests in test_grading.py)."""
    course = new_course(tmp_path_factory.mktemp("llmcourse-grade"), ROUNDS)
    llmcourse(course, "release", "all")
    for assignment in ROUNDS:
        submit_all(course, assignment)
    llmcourse(course, "autograde", "all", "--workers", "1")
    llmcourse(course, "feedback", "all")
    llmcourse(course, "export", "--out", "grades.csv")
    return course


def scores(course: Path) -> dict[tuple[str, str], tuple[float, float]]:
    with open(course / "grades.csv") as f:
        return {(row["assignment"], row["student_id"]): (float(row["score"]), float(row["max_score"]))
                for row in csv.DictReader(f)}


def feedback(course: Path, student: str, assignment: str) -> str:
    return (course / "feedback" / student / assignment / f"{assignment}.html").read_text()


def both(request, assignment: str) -> list[Path]:
    """The graded courses that hold ``assignment``: `llmcourse grade`'s, and nbgrader's for its chapter."""
    courses = [request.getfixturevalue("graded_course")]
    return courses + [request.getfixturevalue("nbgrader_course")] if assignment == NBGRADER_CHAPTER else courses


def test_every_chapter_has_a_round():
    assert sorted(ROUNDS) == sorted(p.name for p in (ROOT / "solutions").glob("[0-9][0-9]-*"))


def test_the_committed_exercises_are_the_release(graded_course):
    """exercises/ is what nbgrader generates from solutions/ (`make exercises` regenerates it)."""
    compare = filecmp.dircmp(ROOT / "exercises", graded_course / "exercises", ignore=[".ipynb_checkpoints"])
    stale = []

    def walk(cmp):
        stale.extend(cmp.left_only + cmp.right_only + cmp.diff_files)
        for sub in cmp.subdirs.values():
            walk(sub)

    walk(compare)
    assert not stale, f"exercises/ is out of date ({stale}): run `make exercises` and commit the result"


@pytest.mark.parametrize("assignment", ROUNDS)
def test_release_has_no_solutions_or_hidden_tests(request, assignment):
    for course in both(request, assignment):
        release_dir = course / "exercises" / assignment
        text = (release_dir / f"{assignment}.ipynb").read_text()
        assert "raise NotImplementedError()" in text
        assert "BEGIN SOLUTION" not in text and "run_hidden" not in text
        assert not (release_dir / "hidden_checks.py").exists()


@pytest.mark.parametrize("assignment", ROUNDS)
def test_scores_full_zero_and_exact_partial(request, assignment):
    spec = ROUNDS[assignment]
    for course in both(request, assignment):
        got = scores(course)
        assert got[assignment, "ref"] == (spec.total, spec.total)
        assert got[assignment, "stub"] == (0.0, spec.total)
        assert got[assignment, "wrong"] == (spec.wrong_score, spec.total)


def test_nbgrader_and_llmcourse_grade_give_the_same_scores(nbgrader_course, graded_course):
    """The two graders share the verdicts: nbgrader's test cells and `llmcourse grade` call the same checks."""
    by_nbgrader = {key: value for key, value in scores(nbgrader_course).items() if key[0] == NBGRADER_CHAPTER}
    by_llmcourse = {key: value for key, value in scores(graded_course).items() if key[0] == NBGRADER_CHAPTER}
    assert len(by_nbgrader) == 4 and by_nbgrader == by_llmcourse


@pytest.mark.parametrize("assignment", ROUNDS)
def test_feedback_hides_the_hidden_tests(request, assignment):
    hidden_source = (ROOT / "solutions" / assignment / "hidden_checks.py").read_text()
    # a case's label (the literal part of an f-string label), long enough not to occur by chance
    hidden_labels = [label for label in re.findall(r'Case\(\s*f?"([^"{]+)"', hidden_source) if len(label) >= 8]
    assert hidden_labels
    for course in both(request, assignment):
        for student in STUDENTS:
            html = feedback(course, student, assignment)
            assert "run_hidden" not in html and "BEGIN HIDDEN TESTS" not in html
            for label in hidden_labels:
                assert label not in html, f"hidden case {label!r} shows in {student}'s feedback"
        assert ROUNDS[assignment].mistake in feedback(course, "wrong", assignment)  # still names the mistake


@pytest.mark.parametrize("assignment", FORBIDDEN)
def test_a_forbidden_call_is_refused(request, assignment):
    grade_id, _, mistake = FORBIDDEN[assignment]
    for course in both(request, assignment):
        assert mistake in feedback(course, "forbidden", assignment)
        earned, total = scores(course)[assignment, "forbidden"]
        assert total == ROUNDS[assignment].total and earned <= total - get_exercise(grade_id).points
        if assignment == NBGRADER_CHAPTER:
            assert earned == FORBIDDEN_02_SCORE
    record = json.loads((request.getfixturevalue("graded_course") / "autograded" / "forbidden" / assignment /
                         "grading.json").read_text())
    assert record["cells"][f"check_{grade_id}"]["earned"] == record["cells"][f"hidden_{grade_id}"]["earned"] == 0


def test_sqlalchemy_is_pinned_below_2_1():
    """SQLAlchemy 2.1 breaks nbgrader's gradebook sessions (every command warns 'not in session')."""
    import sqlalchemy

    assert tuple(int(p) for p in sqlalchemy.__version__.split(".")[:2]) < (2, 1)


def test_autograde_kernel_is_the_project_environment():
    """nbgrader runs the kernel named python3: it must be this environment's, which has grader."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([str(BIN / "jupyter"), "kernelspec", "list", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    spec = json.loads(out)["kernelspecs"]["python3"]["spec"]
    kernel_python = spec["argv"][0]
    probe = subprocess.run([kernel_python, "-c", "import grader, llmcourse; print(grader.__file__)"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, f"the python3 kernel ({kernel_python}) cannot import grader: {probe.stderr}"
