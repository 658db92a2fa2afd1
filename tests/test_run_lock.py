import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hope.errors import HopeError
from hope.run_lock import RunLock

SRC = str(Path(__file__).resolve().parents[1] / "src")
HOLD = """
import sys, time
from hope.run_lock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """A second process that takes the lock on ``tmp_path / 'run'`` and sleeps; killed at the end."""
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_second_writer_is_refused_with_the_holders_pid_and_host(tmp_path, holder):
    with pytest.raises(HopeError) as err:
        RunLock(tmp_path / "run").acquire()
    message = str(err.value)
    assert "\n" not in message
    assert f"process {holder.pid} on host {socket.gethostname()}" in message
    assert "choose another --out" in message


def test_lock_of_a_killed_process_does_not_block(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / ".lock").exists()  # left behind, but no longer held
    with RunLock(tmp_path / "run") as lock:
        assert lock.held
        assert (tmp_path / "run" / ".lock").read_text().split() == [str(os.getpid()), socket.gethostname()]


def test_released_on_normal_exit_and_on_exception(tmp_path):
    folder = tmp_path / "a" / "b"
    with RunLock(folder) as lock:
        with pytest.raises(HopeError, match="is in use by process"):
            RunLock(folder).acquire()
    assert not lock.held
    with pytest.raises(RuntimeError):
        with RunLock(folder):
            raise RuntimeError("boom")
    with RunLock(folder):
        pass


def test_released_when_the_holder_exits(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    code = "import sys; from hope.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); sys.exit(3)"
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env).returncode == 3
    with RunLock(tmp_path):
        pass
