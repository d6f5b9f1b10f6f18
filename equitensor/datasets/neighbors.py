"""Periodic radius graphs with a numba cell list.

Convention (identical to ``ase.neighborlist.neighbor_list("ijS", ...)``): for every returned edge
``e``, sender ``i[e]``, receiver ``j[e]`` and integer image shift ``S[e]`` the edge vector is

    D = positions[j] - positions[i] + S @ cell,     0 < |D| < r_max,

with both directions of every pair present and no self edge with zero shift. Atoms may lie
outside the cell; they are wrapped into it only for binning and the shifts are corrected so that
``D`` refers to the positions as given. The one deliberate difference from ASE: two *distinct*
atoms at exactly the same point give no edge here (a zero-length edge has no direction and turns
spherical harmonics into NaN), while ASE returns it. Pairs at |D| == r_max up to rounding
(ties) may be decided differently from ASE, which computes D in a different order.

Algorithm. Fractional coordinates ``s = x @ inv(cell)`` are binned into a grid of ``nbins_k``
bins per lattice direction. A point within distance ``r`` of ``x`` differs from it in fractional
coordinate ``k`` by at most ``r / width_k``, where ``width_k`` is the perpendicular width of the
cell along direction ``k`` (the distance between the two cell faces spanned by the other two
vectors). So scanning ``m_k = ceil(r * nbins_k / width_k)`` bins to either side finds every
neighbour, for any skew. In a periodic direction the scanned bin index is wrapped and the wrap
count is the image shift; when the cell is thinner than ``r_max`` this simply visits several
images (``n_k = ceil(r_max / width_k)`` of them to each side), so small and strongly skewed
cells need no special case. Non-periodic directions are binned over the extent of the atoms and
never wrapped; a zero or degenerate cell vector there is replaced by a unit vector orthogonal to
the periodic ones (its shift is always 0, so the replacement never shows in the output).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["neighbor_list"]

# Bins per direction are floor(width * _BIN_SPLIT / r_max). Half-cutoff bins (2) would test
# ~40 % fewer pairs, but visiting 125 mostly tiny bins cost more than it saved on 10k-atom Cu
# (measured: 0.16 s vs 0.13 s), so bins are one cutoff wide.
_BIN_SPLIT = 1
# Cap on the total number of bins so a huge vacuum or a tiny r_max cannot exhaust memory;
# fewer bins only means a wider scan (m_k grows), never a missed neighbour.
_MAX_BINS_PER_ATOM = 4
_MIN_MAX_BINS = 1000


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs closer than ``r_max``, with periodic image shifts.

    Args:
        positions: [N, 3] float64 Cartesian positions (Å). May lie outside the cell.
        cell: [3, 3] lattice vectors as rows (Å). Rows of non-periodic directions may be zero.
        pbc: [3] bool, periodicity per lattice direction.
        r_max: cutoff radius (Å), > 0. Pairs with |D| < r_max are returned (strict, as ASE).

    Returns:
        ``(i, j, S)``: senders [E] int64, receivers [E] int64, shifts [E, 3] int64, grouped by
        sender (``i`` non-decreasing; order within a sender unspecified);
        ``D = positions[j] - positions[i] + S @ cell``.

    Raises:
        ValueError: NaN/inf positions (names the first bad atom), a singular cell along
            periodic directions, ``r_max <= 0`` or non-finite, or badly shaped inputs.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(-1)
    if pbc.size == 1:
        pbc = np.repeat(pbc, 3)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if pbc.shape != (3,):
        raise ValueError(f"pbc must have 3 entries, got {pbc.shape}")
    r_max = float(r_max)
    if not (r_max > 0.0 and math.isfinite(r_max)):
        raise ValueError(f"r_max must be a positive finite number, got {r_max}")
    if not np.isfinite(positions).all():
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise ValueError(f"position of atom {bad} is not finite: {positions[bad].tolist()}")
    if not np.isfinite(cell).all():
        raise ValueError(f"cell has non-finite entries: {cell.tolist()}")
    n_atoms = positions.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if n_atoms == 0:
        return empty, empty.copy(), np.zeros((0, 3), dtype=np.int64)

    if pbc.all():
        eff_cell = cell
        inv_cell, invertible = _inverse3(cell)
        if not invertible:
            raise ValueError(
                f"cell is singular (pbc={pbc.tolist()}, cell={cell.tolist()}); give three "
                "independent lattice vectors or set pbc=False along the degenerate ones"
            )
    else:
        eff_cell = _effective_cell(cell, pbc)
        inv_cell = np.linalg.inv(eff_cell)
    max_bins = max(_MIN_MAX_BINS, _MAX_BINS_PER_ATOM * n_atoms)
    wrapped, wrap, bin3, nbins, scan, expected = _bin_atoms(
        positions, eff_cell, inv_cell, pbc, r_max, _BIN_SPLIT, max_bins
    )
    # Initial output size: expected pair count at the atoms' mean density (+50 %), at least
    # 48 per atom (slabs are mostly vacuum, so their mean density underestimates), and at most
    # a few million entries (a flat or point-like free extent makes the estimate meaningless).
    floor = 48.0 * n_atoms
    capacity = int(min(max(1.5 * expected, floor), max(floor, 4e6))) + 16
    while True:
        i = np.empty(capacity, dtype=np.int64)
        j = np.empty(capacity, dtype=np.int64)
        shift = np.empty((capacity, 3), dtype=np.int64)
        count = _cell_list_pairs(wrapped, wrap, eff_cell, bin3, nbins, scan, pbc, r_max * r_max, i, j, shift)
        if count <= capacity:
            break
        capacity = count  # exact size now known; the second pass always fits
    # Shifts along non-periodic directions are 0 by construction; the effective cell differs
    # from ``cell`` only in those rows, so ``S @ cell`` is exact for the caller's cell too.
    return i[:count], j[:count], shift[:count]


def _effective_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Cell with non-periodic rows replaced by orthonormal completions of the periodic rows."""
    periodic_rows = cell[pbc]
    if periodic_rows.shape[0] > 0:
        sv = np.linalg.svd(periodic_rows, compute_uv=False)
        scale = max(np.abs(cell).max(), 1e-300)
        if sv.min() <= 1e-10 * scale or np.abs(periodic_rows).max() == 0.0:
            raise ValueError(
                f"cell is singular along its periodic directions (pbc={pbc.tolist()}, "
                f"cell={cell.tolist()}); give three independent lattice vectors or set pbc=False"
            )
    eff = cell.copy()
    # Orthonormal basis of the complement of the periodic rows: the last right-singular
    # vectors of the periodic rows (or the identity when nothing is periodic).
    if periodic_rows.shape[0] == 0:
        complement = np.eye(3)
    else:
        _, _, vt = np.linalg.svd(periodic_rows)
        complement = vt[periodic_rows.shape[0] :]
    for row, k in zip(complement, np.flatnonzero(~pbc)):
        eff[k] = row
    return eff


@njit(cache=True)
def _inverse3(m):
    """Inverse of a 3x3 matrix by cofactors, and whether it is safely invertible.

    Invertible means |det| of the row-normalised matrix > 1e-10, i.e. the rows are not
    (nearly) coplanar, independent of the cell's size.
    """
    c00 = m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]
    c01 = m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2]
    c02 = m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]
    det = m[0, 0] * c00 + m[0, 1] * c01 + m[0, 2] * c02
    norms = np.sqrt((m * m).sum(axis=1))
    scale = norms[0] * norms[1] * norms[2]
    inv = np.zeros((3, 3))
    if scale == 0.0 or abs(det) <= 1e-10 * scale:
        return inv, False
    inv[0, 0] = c00 / det
    inv[1, 0] = c01 / det
    inv[2, 0] = c02 / det
    inv[0, 1] = (m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]) / det
    inv[1, 1] = (m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]) / det
    inv[2, 1] = (m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1]) / det
    inv[0, 2] = (m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]) / det
    inv[1, 2] = (m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]) / det
    inv[2, 2] = (m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]) / det
    return inv, True


@njit(cache=True)
def _bin_atoms(positions, cell, inv_cell, pbc, r_max, split, max_bins):
    """Wrap atoms into the cell along periodic directions and assign them to bins.

    Returns ``wrapped`` [N,3] (= positions - wrap @ cell), ``wrap`` [N,3] int64, ``bin3`` [N,3]
    bin coordinates, ``nbins`` [3], ``scan`` [3] bins to visit on each side, and the expected
    pair count at the mean density (for sizing the output).
    """
    n = positions.shape[0]
    frac = np.empty((n, 3))
    for a in range(n):
        for k in range(3):
            frac[a, k] = (
                positions[a, 0] * inv_cell[0, k]
                + positions[a, 1] * inv_cell[1, k]
                + positions[a, 2] * inv_cell[2, k]
            )
    wrap = np.zeros((n, 3), dtype=np.int64)
    lower = np.zeros(3)
    extent = np.ones(3)
    for k in range(3):
        if pbc[k]:
            for a in range(n):
                w = np.floor(frac[a, k])
                frac[a, k] -= w
                wrap[a, k] = np.int64(w)
        else:
            lo = frac[:, k].min()
            lower[k] = lo
            extent[k] = max(frac[:, k].max() - lo, 0.0)
    wrapped = np.empty((n, 3))
    for a in range(n):
        for c in range(3):
            wrapped[a, c] = positions[a, c] - (
                wrap[a, 0] * cell[0, c] + wrap[a, 1] * cell[1, c] + wrap[a, 2] * cell[2, c]
            )
    # Perpendicular width (Å) of the binned region along each direction: 1/|reciprocal vector|,
    # times the atoms' fractional extent in non-periodic directions.
    widths = np.empty(3)
    nbins = np.empty(3, dtype=np.int64)
    for k in range(3):
        widths[k] = 1.0 / np.sqrt(inv_cell[0, k] ** 2 + inv_cell[1, k] ** 2 + inv_cell[2, k] ** 2)
        if not pbc[k]:
            widths[k] *= extent[k]
        nbins[k] = max(1, np.int64(np.floor(widths[k] * split / r_max)))
    while nbins[0] * nbins[1] * nbins[2] > max_bins:
        for k in range(3):
            nbins[k] = max(1, nbins[k] // 2)
    scan = np.zeros(3, dtype=np.int64)
    for k in range(3):
        if widths[k] > 0.0:
            scan[k] = np.int64(np.ceil(r_max * nbins[k] / widths[k]))
        if not pbc[k]:
            scan[k] = min(scan[k], nbins[k])
    bin3 = np.empty((n, 3), dtype=np.int64)
    for a in range(n):
        for k in range(3):
            rel = frac[a, k] if pbc[k] else (frac[a, k] - lower[k]) / (extent[k] if extent[k] > 0 else 1.0)
            # Clamp: s == 1.0 after rounding, or the maximum of a free extent.
            bin3[a, k] = min(max(np.int64(np.floor(rel * nbins[k])), 0), nbins[k] - 1)
    volume = max(widths[0] * widths[1] * widths[2], 1e-12)
    expected = n * (n / volume) * (4.0 / 3.0) * np.pi * r_max**3
    return wrapped, wrap, bin3, nbins, scan, expected


@njit(cache=True)
def _cell_list_pairs(wrapped, wrap, cell, bin3, nbins, scan, pbc, r2_max, out_i, out_j, out_s):
    """Pair search over a bin grid, writing (i, j, S) grouped by i.

    Pairs are found between wrapped positions with bin image shift T; the shift reported for
    the caller's positions is S = T + wrap[i] - wrap[j].

    Returns the number of pairs found. Only the first ``len(out_i)`` are written; a larger
    return value means the outputs were too small and the caller must retry with that size.
    (Fixed-size outputs keep the inner loop free of reallocation, which numba compiles poorly.)
    """
    n = wrapped.shape[0]
    nb0, nb1, nb2 = nbins[0], nbins[1], nbins[2]
    n_bins = nb0 * nb1 * nb2
    # Counting sort of atoms by flat bin index; positions are copied in bin order so the inner
    # loop reads memory contiguously.
    flat = (bin3[:, 0] * nb1 + bin3[:, 1]) * nb2 + bin3[:, 2]
    start = np.zeros(n_bins + 1, dtype=np.int64)
    for a in range(n):
        start[flat[a] + 1] += 1
    for b in range(n_bins):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    members = np.empty(n, dtype=np.int64)
    binned = np.empty((n, 3), dtype=np.float64)
    for a in range(n):
        p = fill[flat[a]]
        members[p] = a
        binned[p, 0] = wrapped[a, 0]
        binned[p, 1] = wrapped[a, 1]
        binned[p, 2] = wrapped[a, 2]
        fill[flat[a]] += 1

    capacity = out_i.shape[0]
    count = 0
    for a in range(n):
        xa0, xa1, xa2 = wrapped[a, 0], wrapped[a, 1], wrapped[a, 2]
        for d0 in range(-scan[0], scan[0] + 1):
            c0 = bin3[a, 0] + d0
            t0 = 0
            if pbc[0]:
                t0 = c0 // nb0
                c0 -= t0 * nb0
            elif c0 < 0 or c0 >= nb0:
                continue
            for d1 in range(-scan[1], scan[1] + 1):
                c1 = bin3[a, 1] + d1
                t1 = 0
                if pbc[1]:
                    t1 = c1 // nb1
                    c1 -= t1 * nb1
                elif c1 < 0 or c1 >= nb1:
                    continue
                for d2 in range(-scan[2], scan[2] + 1):
                    c2 = bin3[a, 2] + d2
                    t2 = 0
                    if pbc[2]:
                        t2 = c2 // nb2
                        c2 -= t2 * nb2
                    elif c2 < 0 or c2 >= nb2:
                        continue
                    b = (c0 * nb1 + c1) * nb2 + c2
                    if start[b] == start[b + 1]:
                        continue
                    # Image offset T @ cell, shared by all atoms of this bin; folded into the
                    # sender position once instead of per pair.
                    ya0 = xa0 - (t0 * cell[0, 0] + t1 * cell[1, 0] + t2 * cell[2, 0])
                    ya1 = xa1 - (t0 * cell[0, 1] + t1 * cell[1, 1] + t2 * cell[2, 1])
                    ya2 = xa2 - (t0 * cell[0, 2] + t1 * cell[1, 2] + t2 * cell[2, 2])
                    for p in range(start[b], start[b + 1]):
                        dx = binned[p, 0] - ya0
                        dy = binned[p, 1] - ya1
                        dz = binned[p, 2] - ya2
                        r2 = dx * dx + dy * dy + dz * dz
                        if r2 < r2_max and r2 > 0.0:
                            if count < capacity:
                                m = members[p]
                                out_i[count] = a
                                out_j[count] = m
                                out_s[count, 0] = t0 + wrap[a, 0] - wrap[m, 0]
                                out_s[count, 1] = t1 + wrap[a, 1] - wrap[m, 1]
                                out_s[count, 2] = t2 + wrap[a, 2] - wrap[m, 2]
                            count += 1
    return count


@njit(cache=True)
def shortest_edge_length(
    positions: np.ndarray, cell: np.ndarray, i: np.ndarray, j: np.ndarray, shifts: np.ndarray
) -> float:
    """min over edges of ``|positions[j] - positions[i] + shifts @ cell|`` (inf without edges).

    One pass with no [E, 3] temporaries. Rounding may differ from numpy's evaluation of the same
    formula in the last bits, so compare against a threshold with some margin.
    """
    best = np.inf
    for e in range(i.shape[0]):
        squared = 0.0
        for k in range(3):
            offset = shifts[e, 0] * cell[0, k] + shifts[e, 1] * cell[1, k] + shifts[e, 2] * cell[2, k]
            component = positions[j[e], k] - positions[i[e], k] + offset
            squared += component * component
        best = min(best, squared)
    return math.sqrt(best)
