"""How OpenMP threads wait: passively, unless the user chose otherwise.

PyTorch's CPU build runs its parallel ops on GNU OpenMP, whose idle threads spin (busy-wait)
for a while before sleeping. On cores shared with other work a spinning thread steals the
core from the one that holds the work: measured here on a 2-core machine with two other
processes running, a 2 mm brain registration took 38.9 s on two threads with the default
policy, 4.3 s with ``OMP_WAIT_POLICY=PASSIVE`` and 4.3 s on one thread (``docs/registration.md``).
libgomp reads the variable once, when torch is first imported, so it must be set before that:
the command line does it first thing; Python users set it in their environment.

Example::

    >>> from regnet._openmp import prefer_passive_waiting
    >>> prefer_passive_waiting()     # before `import torch`; no effect once torch is imported
"""

from __future__ import annotations

import os
import sys


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it (or ``GOMP_SPINCOUNT``) is already set and
    torch is not imported yet. Returns whether the variable is now in force for this process."""
    if "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
