"""`llmcourse doctor` and `llmcourse fetch`: what the course needs offline, and the one command that fixes it."""

import os
import subprocess
import sys

from llmcourse import cache, data, doctor, models


def test_doctor_is_green_after_set_up(monkeypatch):
    """`make test` has fetched everything, so the course can run offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = subprocess.run([sys.executable, "-m", "llmcourse.cli", "doctor"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for line in ("torch", "transformers", "datasets", "nbgrader", "jupyterlab", "CUDA", "MPS",
                 "all-MiniLM-L6-v2", "SmolLM2-135M-Instruct (safetensors)", "sentence-polarity",
                 "bigbench/emoji_movie", "chinchilla points", "Hugging Face hub: not reachable",
                 "Ready: the course can run offline."):
        assert line in out, f"{line!r} missing from:\n{out}"


def test_doctor_verify_hashes_every_cached_file_again(tmp_path, monkeypatch):
    """`llmcourse doctor` trusts a cached file by size and modification time; `--verify` hashes it again."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    shakespeare = data.SHAKESPEARE
    folder = shakespeare.cache_folder()
    folder.mkdir(parents=True)
    (folder / "hamlet_gut.txt").write_text("To be, or not to be")
    long_ago = 10**18
    os.utime(folder / "hamlet_gut.txt", ns=(long_ago, long_ago))
    cache.write_manifest(folder, shakespeare.requirement)
    (folder / "hamlet_gut.txt").write_text("To be, or not to go")  # bit rot that keeps size and time
    os.utime(folder / "hamlet_gut.txt", ns=(long_ago, long_ago))
    rows = lambda lines: [line for line in lines if line.strip().startswith("shakespeare")]  # noqa: E731
    assert " ok " in rows(doctor.report()[0])[0]
    (row,) = rows(doctor.report(verify=True)[0])
    assert "MISSING" in row and "SHA-256" in row


def test_doctor_names_the_fix_when_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    for model in models.SHIPPED.values():
        monkeypatch.setattr(type(model), "installed_folder", lambda self: None)
    lines, ready = doctor.report()
    text = "\n".join(lines)
    assert not ready
    assert "MISSING" in text and "not fetched yet" in text
    assert text.splitlines()[-1].endswith("Fix, while online:  llmcourse fetch")


def test_doctor_exit_code_follows_readiness(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "report", lambda verify: (["Not ready"], False))
    assert doctor.main() == 1
    monkeypatch.setattr(doctor, "report", lambda verify: (["Ready"], True))
    assert doctor.main() == 0


def test_fetch_reports_what_it_could_not_get(tmp_path, monkeypatch, capsys):
    from llmcourse import assets, cli

    monkeypatch.setattr(assets, "fetch_all", lambda: ["chinchilla points: could not download it: are you offline?"])
    assert cli.main(["fetch"]) == 1
    assert "not fetched: chinchilla points" in capsys.readouterr().err


def test_hub_check_honours_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.hub_reachable() is False
