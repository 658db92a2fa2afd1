"""hope.files: a failed write leaves the old file whole and no temporary behind."""

import pytest

from hope.files import write_atomic, write_text_atomic


def test_write_is_whole_or_nothing(tmp_path):
    path = tmp_path / "suite.json"
    write_text_atomic(path, "old")

    def half_then_fail(tmp):
        tmp.write_text("ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["suite.json"]
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
