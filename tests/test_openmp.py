"""regnet._openmp: OpenMP threads wait passively in command-line processes, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = ("import os, sys\n"
        "from regnet._openmp import prefer_passive_waiting\n"
        "{before}\n"
        "print(prefer_passive_waiting(), os.environ.get('OMP_WAIT_POLICY'))\n")


def _run(before: str = "", **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", CODE.format(before=before)], capture_output=True, text=True,
                         env=environ, check=True)
    return out.stdout.strip()


def test_set_before_torch():
    assert _run() == "True PASSIVE"


def test_user_choice_kept():
    assert _run(OMP_WAIT_POLICY="ACTIVE") == "False ACTIVE"
    assert _run(GOMP_SPINCOUNT="1000") == "False None"


def test_too_late_after_torch():
    assert _run("import torch") == "False None"


def test_the_command_line_sets_it_before_importing_torch():
    code = ("import os, sys\nfrom regnet.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n")
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True)
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE False"
