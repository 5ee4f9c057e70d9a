"""``regnet register-many`` and ``regnet template`` on Lightning: the chunks of pairs sharded over
the ranks by ``Trainer.predict``, each written by the rank that owns it (``docs/cohorts.md``).

:class:`LightningEngine` is the engine of :func:`regnet.pipeline.many.register_many` for any
Lightning strategy: DDP over CPU processes (gloo), GPUs and nodes, processes started by
``torchrun`` or SLURM's ``srun`` (Lightning's cluster environments). One ``run``:

1. ``Trainer.predict`` with :class:`ChunkData` and :class:`RegisterChunks`; Lightning starts
   the other processes when it launches them itself (``strategy="ddp"`` re-runs the command in
   each) and sets up the process group;
2. ``ChunkData.setup`` (every rank): rank 0 plans (which pairs to skip, the chunks) and
   broadcasts the plan, so every rank shards the same list even while rank 0 writes files;
   the list is padded with empty chunks to at least one per rank (Lightning's prediction
   sampler gives each rank the chunks ``rank, rank + world, ...``, none twice);
3. ``RegisterChunks.predict_step``: :func:`regnet.pipeline.chunk.run_chunk` on the rank's
   device, with gradients (registration is an optimisation: ``Trainer(inference_mode=False)``);
4. ``on_predict_epoch_end``: the summary rows are gathered on rank 0
   (``torch.distributed.all_gather_object``); other ranks return ``None``.

The same trainer (and process group) serves every later ``run`` of the engine (the rounds of
``regnet template``); rank 0 writes files between runs, and the next run's broadcast waits
for it. :meth:`LightningEngine.close` (or leaving a ``with`` block) ends the process group: a
process that exits with a live gloo group can abort in its C++ teardown ("terminate called
without an active exception", exit status -6) after its work is done.

Example::

    >>> with LightningEngine(accelerator="cpu", devices=2, strategy="ddp") as engine:
    ...     rows = register_many(pairs, "affine+syn", summary="summary.csv", engine=engine)  # rank 0: all rows
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from regnet.lightning._distributed import end_process_group

__all__ = ["ChunkData", "LightningEngine", "RegisterChunks"]


def _only(batch: list):
    return batch[0]


class _Chunks(Dataset):
    def __init__(self, chunks: list):
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int):
        return self.chunks[index]


class ChunkData(pl.LightningDataModule):
    """The chunks of pairs as a dataset (one item = one chunk, a list of
    :class:`~regnet.pipeline.pairs.Pair`), planned on rank 0 and broadcast in :meth:`setup`."""

    def __init__(self, plan: Callable[[int], tuple[dict, list]]):
        super().__init__()
        self.plan = plan
        self.planned: dict = {}
        self.chunks: list = []

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        main = trainer is None or trainer.is_global_zero
        plan = self.plan(world) if main else None
        if trainer is not None and world > 1:
            plan = trainer.strategy.broadcast(plan, src=0)
        self.planned, chunks = plan
        self.chunks = list(chunks) + [[] for _ in range(world - len(chunks))]

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_Chunks(self.chunks), batch_size=1, shuffle=False, num_workers=0, collate_fn=_only)


class RegisterChunks(pl.LightningModule):
    """Runs ``work(chunk, device=..., rank=...)`` (:func:`~regnet.pipeline.chunk.run_chunk`)
    on each chunk its rank owns and gathers the summary rows on rank 0 (:attr:`gathered`)."""

    def __init__(self, work: Callable[..., list[dict]], verbose: bool = True):
        super().__init__()
        self.work = work
        self.verbose = verbose
        self.rows: list[dict] = []
        self.gathered: list[dict] | None = None
        self._bar = None

    def on_predict_start(self) -> None:
        self.rows, self.gathered = [], None
        trainer = self.trainer
        if self.verbose and trainer.is_global_zero:
            from tqdm.auto import tqdm

            chunks = trainer.datamodule.chunks
            mine = sum(len(c) for c in chunks[trainer.global_rank::trainer.world_size])
            self._bar = tqdm(total=mine, unit="pair", dynamic_ncols=True,
                             desc=f"register-many (rank 0 of {trainer.world_size})")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        if not batch:
            return None
        device = self.trainer.strategy.root_device
        with torch.inference_mode(False), torch.enable_grad():
            rows = self.work(batch, device=device, rank=self.trainer.global_rank)
        self.rows += rows
        if self._bar is not None:
            self._bar.update(len(batch))
        return None

    def on_predict_epoch_end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        world = self.trainer.world_size
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            every: list = [None] * world
            torch.distributed.all_gather_object(every, self.rows)
            self.gathered = [row for rows in every for row in (rows or [])]
        else:
            self.gathered = list(self.rows)


class LightningEngine:
    """The engine of :func:`~regnet.pipeline.many.register_many` on a Lightning ``Trainer``.

    Args:
        accelerator, devices, num_nodes, strategy: passed to ``pl.Trainer`` (e.g. ``"gpu"``,
            ``4``, ``2``, ``"ddp"``; ``"cpu"``, ``2``, ``1``, ``"ddp"`` for two gloo processes).
        verbose: a tqdm bar over rank 0's pairs.
        **trainer_kwargs: any other ``pl.Trainer`` argument.
    """

    def __init__(self, accelerator="cpu", devices=1, num_nodes: int = 1, strategy="auto", verbose: bool = True,
                 **trainer_kwargs):
        options = dict(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                       logger=False, enable_checkpointing=False, enable_progress_bar=False,
                       enable_model_summary=False, inference_mode=False)
        options.update(trainer_kwargs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            self.trainer = pl.Trainer(**options)
        self.verbose = verbose

    @property
    def is_main(self) -> bool:
        return self.trainer.is_global_zero

    def close(self) -> None:
        """End the process group this engine's trainer set up (every rank, after its last
        :meth:`run`); nothing when there is none. The engine cannot run again afterwards."""
        end_process_group()

    def __enter__(self) -> LightningEngine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def run(self, plan: Callable[[int], tuple[dict, list]], work: Callable[..., list[dict]]) -> list[dict] | None:
        data = ChunkData(plan)
        module = RegisterChunks(work, self.verbose)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*no parameters.*")
            self.trainer.predict(module, datamodule=data, return_predictions=False)
        if not self.is_main:
            return None
        return list(data.planned.values()) + list(module.gathered or [])
