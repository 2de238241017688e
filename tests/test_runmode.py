"""Quick mode is one switch, read in one place."""

from llmcourse import runmode


def test_quick_mode_switch(monkeypatch, capsys):
    monkeypatch.delenv(runmode.QUICK_ENV, raising=False)
    assert not runmode.is_quick() and runmode.pick(1000, 10) == 1000
    assert "Full mode" in runmode.announce_mode()
    for value in ("1", "true", "YES"):
        monkeypatch.setenv(runmode.QUICK_ENV, value)
        assert runmode.is_quick() and runmode.pick(1000, 10) == 10
    monkeypatch.setenv(runmode.QUICK_ENV, "0")
    assert not runmode.is_quick()
    monkeypatch.setenv(runmode.QUICK_ENV, "1")
    runmode.announce_mode()
    assert "Quick mode" in capsys.readouterr().out
