"""OC20 atom tags: read them when a file stores them, rebuild them when it does not.

Convention: 0 = fixed sub-surface atom, 1 = free surface (slab) atom, 2 = adsorbate atom.
Molecules and bulk crystals without constraints are all 0.

Rebuild rule, used when a frame has no tags (absent, or all zero) but a ``FixAtoms`` constraint
(the signature of an OC20 slab, e.g. the OC20 ``.traj`` relaxations, which store no tags):

1. fixed atoms -> 0;
2. adsorbate -> 2: the trailing run of atoms whose elements are C, H, O or N that follows the last
   atom of any other element (OC20 writes the slab first and the adsorbate last, and every OC20
   adsorbate is made of C, H, O, N);
3. every other atom -> 1.

Limitation: on a slab that itself ends with C/H/O/N atoms (oxides, nitrides, carbides) the free
slab atoms of those elements at the end of the list are indistinguishable from an adsorbate by
this rule; such files should store tags.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from .frames import fixed_mask

__all__ = ["ADSORBATE_ELEMENTS", "ensure_tags", "infer_tags"]

ADSORBATE_ELEMENTS = frozenset({1, 6, 7, 8})  # H, C, N, O


def infer_tags(numbers: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """OC20 tags [N] int64 from atomic numbers [N] and the fixed mask [N] (rule in module doc)."""
    numbers = np.asarray(numbers)
    fixed = np.asarray(fixed, dtype=bool)
    tags = np.ones(len(numbers), dtype=np.int64)
    is_slab_element = ~np.isin(numbers, list(ADSORBATE_ELEMENTS))
    if is_slab_element.any():
        last_slab = int(np.flatnonzero(is_slab_element)[-1])
        tags[last_slab + 1 :] = 2
    tags[fixed] = 0
    return tags


def ensure_tags(atoms: Atoms, rebuild: bool = True) -> Atoms:
    """Keep stored non-zero tags; otherwise rebuild them for constrained slabs (see module doc).

    With ``rebuild=False`` tags are left as stored (zeros when absent).
    """
    tags = atoms.get_tags()
    if not rebuild or (tags != 0).any():
        return atoms
    fixed = fixed_mask(atoms)
    if fixed.any():
        atoms.set_tags(infer_tags(atoms.numbers, fixed))
    return atoms
