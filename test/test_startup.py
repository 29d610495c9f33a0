"""process.py answers --help and argument errors before torch is imported, and sets its threads before torch starts
its pool (`model.threads`)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def run_python(code: str, **env: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_help_and_argument_errors_do_not_import_torch():
    code = (
        "import sys, process\n"
        "for argv in (['--help'], ['--threads', 'x']):\n"
        "    try:\n"
        "        process.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'evalutils', 'pandas', 'SimpleITK') if m in sys.modules))"
    )
    assert run_python(code).splitlines()[-1] == "[]"  # after the --help text


def test_threads_are_set_before_torch_and_wait_passively():
    code = (
        "import os\n"
        "from model import threads\n"
        "assert threads.configure(1) == 1\n"
        "import torch\n"
        "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'], threads.budget())"
    )
    assert run_python(code) == "1 PASSIVE 1"


def test_default_is_the_cpus_this_process_may_use():
    code = "import os\nfrom model import threads\nprint(threads.configure() == len(os.sched_getaffinity(0)))"
    assert run_python(code) == "True"
