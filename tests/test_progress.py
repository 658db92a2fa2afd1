import io

import pytest

import hope.progress
from hope.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_written_to_a_file_writes_lines_not_carriage_returns(monkeypatch):
    monkeypatch.setattr(hope.progress, "LOG_INTERVAL_S", 0.0)
    log = io.StringIO()
    with progress_bar(total=3, desc="train", stream=log) as bar:
        for _ in range(3):
            bar.update()
    text = log.getvalue()
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].startswith("train:") and "3/3" in lines[-1]
    assert len(lines) >= 2


def test_a_bar_on_a_file_waits_a_minute_between_lines():
    log = io.StringIO()
    with progress_bar(total=100, desc="train", stream=log) as bar:
        for _ in range(100):
            bar.update()
    lines = [line for line in log.getvalue().splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "0/100" in lines[0] and "100/100" in lines[1]


def test_a_bar_on_a_terminal_redraws_in_place():
    screen = Terminal()
    with progress_bar(total=2, desc="train", stream=screen, mininterval=0) as bar:
        bar.update(2)
    assert "\r" in screen.getvalue()


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()])
def test_a_disabled_bar_writes_nothing(stream):
    with progress_bar(total=2, stream=stream, disable=True) as bar:
        bar.update(2)
    assert stream.getvalue() == ""
