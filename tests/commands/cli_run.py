"""Running `fastdiff` as a user does: a separate process, from a fresh working folder."""
import os
import subprocess
import sys


def fastdiff(*args, cwd, env=None, timeout=600):
    """(exit code, stdout, stderr) of `fastdiff ARGS` run in `cwd`."""
    full_env = {**os.environ, "FASTDIFF_DEBUG": "", **(env or {})}
    done = subprocess.run([sys.executable, "-m", "fastdiff.cli", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr
