"""One run of a pipeline at a time (shaping.lock, on filelock): a second one is refused with a
one-line message, a killed holder leaves nothing that blocks, and `import shaping` needs no fcntl."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shaping.errors import ShapingError
from shaping.lock import RunLock

ROOT = Path(__file__).resolve().parent.parent


def test_a_second_holder_is_refused_in_one_line_naming_the_pipeline(tmp_path):
    with RunLock(tmp_path / "p.lock", "my-pipeline"):
        with pytest.raises(ShapingError) as refused:
            with RunLock(tmp_path / "p.lock", "my-pipeline"):
                pass
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"pipeline 'my-pipeline' is already running (pid {os.getpid()}, started ")
    assert f"(lock: {tmp_path / 'p.lock'})" in message
    with RunLock(tmp_path / "p.lock", "my-pipeline"):  # released on exit, however the block ended
        pass
    assert not (tmp_path / "p.lock.holder").exists()


def test_other_pipelines_do_not_wait(tmp_path):
    with RunLock(tmp_path / "a.lock", "a"), RunLock(tmp_path / "b.lock", "b"):
        pass


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from shaping.lock import RunLock
            with RunLock(Path({str(tmp_path / 'p.lock')!r}), "p"):
                print("held", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ShapingError, match=rf"pipeline 'p' is already running \(pid {holder.pid}, started"):
            with RunLock(tmp_path / "p.lock", "p"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        holder.stdout.close()
    assert (tmp_path / "p.lock.holder").exists()  # left behind by the killed holder: it does not block
    with RunLock(tmp_path / "p.lock", "p"):
        assert str(os.getpid()) in (tmp_path / "p.lock.holder").read_text()


def test_shaping_imports_where_fcntl_does_not_exist(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['fcntl'] = None  # import fcntl fails\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c",
         "import sys\n"
         "try:\n    import fcntl\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('fcntl imported')\n"
         "import shaping, shaping.runner, shaping.lock\n"
         "assert 'fcntl' not in sys.modules or sys.modules['fcntl'] is None\n"
         "print('ok', shaping.run_pipeline.__name__)\n"],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok run_pipeline"
