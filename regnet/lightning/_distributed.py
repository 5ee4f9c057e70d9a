"""The end of a process group: :func:`end_process_group`.

Lightning destroys its process group at exit only for NCCL; a process that exits with a live
gloo group (DDP on CPUs) can abort in the group's C++ teardown ("terminate called without an
active exception", exit status -6) after its work is done. ``regnet train`` and the cohort
engine end the group themselves once their work is finished.
"""

from __future__ import annotations


def end_process_group() -> None:
    """Destroy the default ``torch.distributed`` process group, if there is one (every rank
    calls it after its last collective); nothing otherwise.

    Example::

        >>> end_process_group()  # no group: nothing happens
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
