"""Progress bars (issue 15): drawn on a terminal for work over DELAY seconds, never with -v
(the log lines say the same) and never off a terminal."""
import io
import logging

from mosaicfit.pipeline import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _run(monkeypatch, out, level, delay=0.0, n=5):
    """Draw a bar of `n` steps into `out` (installed in the test's body: pytest's capture
    replaces sys.stderr between a fixture's set-up and the test) and return what it wrote."""
    monkeypatch.setattr(progress.sys, "stderr", out)
    monkeypatch.setattr(progress, "DELAY", delay)
    monkeypatch.setattr(logging.getLogger(), "level", level)
    with progress.progress_bar(n, "reading") as bar:
        for _ in range(n):
            bar.update()
    return out.getvalue()


def test_bar_on_a_terminal(monkeypatch):
    text = _run(monkeypatch, Terminal(), logging.WARNING)
    assert "reading" in text and "/5 " in text and "CCD" in text


def test_no_bar_when_verbose(monkeypatch):
    assert _run(monkeypatch, Terminal(), logging.INFO) == ""


def test_no_bar_off_a_terminal(monkeypatch):
    assert _run(monkeypatch, io.StringIO(), logging.WARNING) == ""


def test_short_work_draws_nothing(monkeypatch):
    assert "reading" not in _run(monkeypatch, Terminal(), logging.WARNING, delay=60.0)
