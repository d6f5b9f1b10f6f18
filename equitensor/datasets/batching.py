"""Size-aware batching: batches bounded by atom and/or edge counts, balanced across data-parallel ranks.

OC20 systems range from ~20 to ~230 atoms, so a fixed number of systems per batch makes memory
per step vary several-fold. :class:`BudgetBatchSampler` packs systems into batches of at most
``max_atoms`` atoms and/or ``max_edges`` directed edges per rank (the idea of fairchem's balanced
batching, whose "neighbors" mode bounds edges for the same reason: a step's memory follows the
edges, and slabs and adsorbates differ in density) instead.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler, Subset

from .base import FrameReader

__all__ = ["AtomBudgetBatchSampler", "BudgetBatchSampler", "atom_counts", "edge_counts"]

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


def edge_counts(dataset: Sequence, r_max: float | None = None, progress: bool = False) -> np.ndarray:
    """[len(dataset)] int64 directed edge count of every item's graph (``edge_index.shape[1]``).

    Frames are read through the frame reader and only their neighbour lists built, with the
    library's neighbour list and cut-off semantics (:func:`~.graph.frame_neighbors`, as
    :class:`~.graph.AtomsToGraph`), so the counts equal the edges of the graphs the loader builds.
    Follows ``Subset`` layers; graphs already held by a cache (``CachedGraphs``: ``.graphs``) give
    their own counts; a ``GraphDataset`` without a ``transform`` is counted on its reader with
    its own cut-off; any other dataset is indexed and its items' ``edge_index`` taken.

    Args:
        dataset: graphs (``GraphDataset``, a cache, ``Subset``, a list of ``Data``) or a frame reader.
        r_max: cut-off radius (Å); needed for a bare frame reader. A graph dataset built with
            another cut-off is an error (its graphs would not have these counts).
        progress: show a tqdm bar (it appears only when counting takes more than a second).

    Raises:
        ValueError: a frame reader without ``r_max``, or ``r_max`` differing from the graphs'.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(dataset), desc="counting edges", unit="frame", disable=not progress, delay=1.0)
    with bar:
        return _edges(dataset, np.arange(len(dataset), dtype=np.int64), r_max, bar)


def _edges(dataset: Sequence, indices: np.ndarray, r_max: float | None, bar) -> np.ndarray:
    """Edge counts of items ``indices`` of ``dataset`` (see :func:`edge_counts`); ticks ``bar``."""
    from .graph import frame_neighbors

    if isinstance(dataset, Subset):
        return _edges(dataset.dataset, np.asarray(dataset.indices, dtype=np.int64)[indices], r_max, bar)
    if isinstance(dataset, FrameReader):
        if r_max is None:
            raise ValueError("edge_counts of a frame reader needs r_max (the model's cut-off, Å)")
        counts = np.empty(len(indices), dtype=np.int64)
        for k, index in enumerate(indices.tolist()):
            counts[k] = len(frame_neighbors(dataset[index], r_max)[0])
            bar.update()
        return counts
    cached, inner = getattr(dataset, "graphs", None), getattr(dataset, "dataset", None)
    if isinstance(cached, list) and inner is not None and len(cached) == len(dataset):
        held = [cached[index] for index in indices.tolist()]
        counts = np.array([-1 if g is None else g.edge_index.shape[1] for g in held], dtype=np.int64)
        bar.update(int((counts >= 0).sum()))
        missing = np.flatnonzero(counts < 0)
        if missing.size:  # not yet built: count them on the dataset under the cache
            counts[missing] = _edges(inner, indices[missing], r_max, bar)
        return counts
    converter, reader = getattr(dataset, "converter", None), getattr(dataset, "reader", None)
    if reader is not None and converter is not None and getattr(dataset, "transform", None) is None:
        if r_max is not None and not math.isclose(r_max, converter.r_max):
            raise ValueError(
                f"edge_counts(r_max={r_max}) of graphs built with r_max={converter.r_max}: pass "
                "r_max=None to count the graphs' own edges, or build the graphs with the same cut-off"
            )
        return _edges(reader, indices, converter.r_max, bar)
    counts = np.empty(len(indices), dtype=np.int64)
    for k, index in enumerate(indices.tolist()):
        counts[k] = dataset[index].edge_index.shape[1]
        bar.update()
    return counts


def _too_large_error(
    dataset: Sequence, index: int, size: int, bound: int, quantity: str = "atoms"
) -> ValueError:
    from .sources import locate_frame

    location = locate_frame(dataset, index)
    where = f"{location[0]}, frame {location[1]}" if location else f"item {index}"
    # an edge count depends on the cut-off too, so lowering r_max is the other way out
    other = " (or lower model.r_max)" if quantity == "edges" else ""
    return ValueError(
        f"train.max_{quantity}_per_batch={bound} is smaller than the system at {where} ({size} {quantity}); "
        f"raise it to at least {size}{other} or leave that frame out"
    )


class BudgetBatchSampler(Sampler[list[int]]):
    """Batches of at most ``max_atoms`` atoms and/or ``max_edges`` edges per rank, balanced
    across ranks; exactly resumable.

    Each epoch walks a permutation that depends only on ``seed + epoch`` (as
    ``DistributedSampler``) and forms *groups*, one batch per rank: each system goes to the
    least-loaded rank of the open group among those where it still fits under every given bound;
    a system that fits nowhere is kept for the next group, and after ``lookahead`` such systems
    the group is closed. Load means edges when an edge bound is given, else atoms. So every rank
    sees the same number of batches and no batch exceeds a bound; with one bound, ranks' loads
    differ by less than the smallest system passed over. A final group that leaves a rank empty
    is filled with the smallest systems of the epoch (by load; as ``DistributedSampler`` pads
    with repeats). The plan is the same on every rank and for every run with the same seed, so
    ``set_start`` (batches to skip) resumes mid-epoch exactly.

    Args:
        dataset: the training items (their sizes are read once, see :func:`atom_counts` and
            :func:`edge_counts`).
        max_atoms: bound on the atoms of one rank's batch; ``None``: atoms are not bounded.
        num_replicas, rank: data-parallel world size and this process's rank.
        seed: shuffling seed; ``shuffle=False`` keeps the dataset order.
        counts: [len(dataset)] atom counts, if already known (skips reading them).
        lookahead: systems passed over before a group is closed.
        max_edges: bound on the directed edges of one rank's batch; ``None``: edges are not bounded.
        edges: [len(dataset)] edge counts, if already known (skips counting them).
        r_max: cut-off for counting the edges of a bare frame reader (graph datasets know theirs).
        progress: tqdm bar while counting edges.

    Raises:
        ValueError: no bound or a bound < 1, a bound smaller than a system (names the file and
            frame), or fewer systems than ranks.
    """

    def __init__(
        self,
        dataset: Sequence,
        max_atoms: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        counts: np.ndarray | None = None,
        lookahead: int = LOOKAHEAD,
        *,
        max_edges: int | None = None,
        edges: np.ndarray | None = None,
        r_max: float | None = None,
        progress: bool = False,
    ):
        given = {q: b for q, b in (("atoms", max_atoms), ("edges", max_edges)) if b is not None}
        if not given:
            raise ValueError("give max_atoms, max_edges or both: the bounds of one rank's batch")
        for quantity, bound in given.items():
            if bound < 1:
                raise ValueError(f"max_{quantity}_per_batch must be positive, got {bound}")
        columns = []
        if max_atoms is not None:
            columns.append(atom_counts(dataset) if counts is None else counts)
        if max_edges is not None:
            columns.append(edge_counts(dataset, r_max, progress) if edges is None else edges)
        self.dataset = dataset
        #: the bounded quantities, in the order of the columns of ``costs`` and ``bounds``; the
        #: last one is balanced across ranks
        self.quantities = tuple(given)
        self.costs = np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1)  # [n, quantities]
        self.bounds = np.array(list(given.values()), dtype=np.int64)
        self._cost_rows = [tuple(row) for row in self.costs.tolist()]
        self._bound_row = (int(self.bounds[0]), int(self.bounds[-1]))
        if len(self.costs) < num_replicas:
            raise ValueError(
                f"{len(self.costs)} training frames cannot be split over {num_replicas} processes"
            )
        for column, quantity in enumerate(self.quantities):
            largest = int(np.argmax(self.costs[:, column]))
            if self.costs[largest, column] > self.bounds[column]:
                raise _too_large_error(
                    dataset, largest, int(self.costs[largest, column]), int(self.bounds[column]), quantity
                )
        self.max_atoms, self.max_edges = given.get("atoms"), given.get("edges")
        self.num_replicas, self.rank = num_replicas, rank
        self.seed, self.shuffle, self.lookahead = seed, shuffle, lookahead
        self.epoch, self.start = 0, 0
        self._plan: tuple[int, list[list[list[int]]]] | None = None

    @property
    def counts(self) -> np.ndarray | None:
        """[n] atom counts, when atoms are bounded."""
        return self.costs[:, 0] if self.max_atoms is not None else None

    @property
    def edges(self) -> np.ndarray | None:
        """[n] edge counts, when edges are bounded."""
        return self.costs[:, -1] if self.max_edges is not None else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` batches of the current epoch (resume)."""
        self.start = int(start)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.costs)))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.costs), generator=generator).tolist()

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
        # Plain Python ints: numpy's per-call overhead on arrays of 1-2 entries made planning an
        # epoch several times slower. There are at most two columns, so testing the first and
        # the last tests every bound (with one column both are the same).
        costs, (first_bound, last_bound) = self._cost_rows, self._bound_row
        members: list[list[int]] = [[] for _ in range(self.num_replicas)]
        loads = [[0] * len(self.bounds) for _ in range(self.num_replicas)]
        passed: list[int] = []
        while pending and len(passed) < self.lookahead:
            index = pending.popleft()
            cost, rank = costs[index], -1
            for r, load in enumerate(loads):  # the least-loaded rank (first on ties) it fits
                if (
                    (rank < 0 or load[-1] < loads[rank][-1])
                    and load[0] + cost[0] <= first_bound
                    and load[-1] + cost[-1] <= last_bound
                ):
                    rank = r
            if rank < 0:
                passed.append(index)
                continue
            members[rank].append(index)
            loads[rank] = [held + size for held, size in zip(loads[rank], cost)]
        pending.extendleft(reversed(passed))  # they lead the next group, in their order
        return members

    def _pad_last(self, group: list[list[int]]) -> None:
        smallest = iter(np.argsort(self.costs[:, -1], kind="stable").tolist())
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


#: the name from before edge bounds; ``AtomBudgetBatchSampler(dataset, max_atoms, ...)`` is unchanged
AtomBudgetBatchSampler = BudgetBatchSampler
