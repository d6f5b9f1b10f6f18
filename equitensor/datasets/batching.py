"""Size-aware batching: batches bounded by an atom count, balanced across data-parallel ranks.

OC20 systems range from ~20 to ~230 atoms, so a fixed number of systems per batch makes memory
per step vary several-fold. :class:`AtomBudgetBatchSampler` packs systems into batches of at most
``max_atoms`` atoms per rank (the idea of fairchem's balanced batching) instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler, Subset

from .base import FrameReader

__all__ = ["AtomBudgetBatchSampler", "atom_counts"]

#: how many systems that do not fit a group are passed over (kept for the next group) before the
#: group is closed; larger packs tighter and balances ranks better at the cost of some disorder.
LOOKAHEAD = 32


def atom_counts(dataset: Sequence) -> np.ndarray:
    """[len(dataset)] int64 atom count of every item, read without building neighbour lists.

    Follows ``Subset`` layers, graph caches (``.dataset``) and ``GraphDataset`` (``.reader``) down
    to the frame reader and asks it (:meth:`FrameReader.num_atoms`); any other dataset is indexed
    and its items' ``natoms`` (or ``len``) taken.
    """
    if isinstance(dataset, Subset):
        return atom_counts(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, FrameReader):
        return np.array([dataset.num_atoms(i) for i in range(len(dataset))], dtype=np.int64)
    inner = getattr(dataset, "reader", None) or getattr(dataset, "dataset", None)
    if inner is not None and len(inner) == len(dataset):
        return atom_counts(inner)

    def count(item) -> int:
        natoms = getattr(item, "natoms", None)
        return int(natoms.sum()) if natoms is not None else len(item)

    return np.array([count(dataset[i]) for i in range(len(dataset))], dtype=np.int64)


def _too_large_error(dataset: Sequence, index: int, natoms: int, max_atoms: int) -> ValueError:
    from .sources import locate_frame

    location = locate_frame(dataset, index)
    where = f"{location[0]}, frame {location[1]}" if location else f"item {index}"
    return ValueError(
        f"train.max_atoms_per_batch={max_atoms} is smaller than the system at {where} ({natoms} atoms); "
        f"raise it to at least {natoms} or leave that frame out"
    )


class AtomBudgetBatchSampler(Sampler[list[int]]):
    """Batches of at most ``max_atoms`` atoms per rank, balanced across ranks; exactly resumable.

    Each epoch walks a permutation that depends only on ``seed + epoch`` (as
    ``DistributedSampler``) and forms *groups*, one batch per rank: each system goes to the
    least-loaded rank of the open group if it fits there; a system that fits nowhere is kept
    for the next group, and after ``lookahead`` such systems the group is closed. So every rank
    sees the same number of batches, no batch exceeds the bound, and ranks' atom counts differ
    by less than the smallest system passed over. A final group that leaves a rank empty is
    filled with the smallest systems of the epoch (as ``DistributedSampler`` pads with repeats).
    The plan is the same on every rank and for every run with the same seed, so ``set_start``
    (batches to skip) resumes mid-epoch exactly.

    Args:
        dataset: the training items (their atom counts are read once, see :func:`atom_counts`).
        max_atoms: bound on the atoms of one rank's batch.
        num_replicas, rank: data-parallel world size and this process's rank.
        seed: shuffling seed; ``shuffle=False`` keeps the dataset order.
        counts: atom counts, if already known (skips reading them).

    Raises:
        ValueError: ``max_atoms`` is smaller than a system (names the file and frame), or there
            are fewer systems than ranks.
    """

    def __init__(
        self,
        dataset: Sequence,
        max_atoms: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        counts: np.ndarray | None = None,
        lookahead: int = LOOKAHEAD,
    ):
        if max_atoms < 1:
            raise ValueError(f"max_atoms_per_batch must be positive, got {max_atoms}")
        self.dataset = dataset
        self.counts = atom_counts(dataset) if counts is None else np.asarray(counts, dtype=np.int64)
        if len(self.counts) < num_replicas:
            raise ValueError(
                f"{len(self.counts)} training frames cannot be split over {num_replicas} processes"
            )
        largest = int(np.argmax(self.counts))
        if self.counts[largest] > max_atoms:
            raise _too_large_error(dataset, largest, int(self.counts[largest]), max_atoms)
        self.max_atoms, self.num_replicas, self.rank = int(max_atoms), num_replicas, rank
        self.seed, self.shuffle, self.lookahead = seed, shuffle, lookahead
        self.epoch, self.start = 0, 0
        self._plan: tuple[int, list[list[list[int]]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` batches of the current epoch (resume)."""
        self.start = int(start)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.counts)))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.counts), generator=generator).tolist()

    def groups(self) -> list[list[list[int]]]:
        """This epoch's plan: ``groups[k][r]`` = indices of rank ``r``'s batch ``k``."""
        if self._plan is not None and self._plan[0] == self.epoch:
            return self._plan[1]
        pending, groups = deque(self._order()), []
        while pending:
            groups.append(self._fill_group(pending))
        self._pad_last(groups[-1])
        self._plan = (self.epoch, groups)
        return groups

    def _fill_group(self, pending: deque) -> list[list[int]]:
        members: list[list[int]] = [[] for _ in range(self.num_replicas)]
        loads = np.zeros(self.num_replicas, dtype=np.int64)
        passed: list[int] = []
        while pending and len(passed) < self.lookahead:
            index = pending.popleft()
            rank = int(np.argmin(loads))
            if loads[rank] + self.counts[index] <= self.max_atoms:
                members[rank].append(index)
                loads[rank] += self.counts[index]
            else:
                passed.append(index)
        pending.extendleft(reversed(passed))  # they lead the next group, in their order
        return members

    def _pad_last(self, group: list[list[int]]) -> None:
        smallest = iter(np.argsort(self.counts, kind="stable").tolist())
        for members in group:
            if not members:
                members.append(next(smallest))

    @property
    def num_batches(self) -> int:
        """Batches per rank in the current epoch (the same on every rank)."""
        return len(self.groups())

    def __iter__(self) -> Iterator[list[int]]:
        for group in self.groups()[self.start :]:
            yield group[self.rank]

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start)
