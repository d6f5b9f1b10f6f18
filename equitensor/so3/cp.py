"""CP (canonical polyadic) factors of the shared-path Clebsch-Gordan tensor (pure numpy).

The shared-path tensor over all degrees up to ``L`` (``d = (L + 1)^2``, components ordered
``l = 0..L``, ``m = -l..l``) is

    M[(l1 m1), (l2 m2), (l3 m3)] = wigner_3j(l1, l2, l3)[m1, m2, m3]

for every triangle-allowed ``(l1, l2, l3)`` whose sum ``l1 + l2 + l3`` has the requested parity
(``"even"``: the paths allowed between natural-parity irreps 0e, 1o, 2e, ...; ``"odd"``: the
ones that produce pseudo-tensors, e.g. 1o x 1o -> 1e) — one shared weight for all paths, as
in Tensor Decomposition Networks (Lin et al. 2025). A rank-``R`` CP decomposition
``M ≈ sum_r A[:, r] ⊗ B[:, r] ⊗ C[:, r]`` turns the product into ``C @ ((A^T x) * (B^T y))``,
``O(d R)`` per channel.

Factors are fitted by alternating least squares with a line search, in float64 from a fixed
seed (deterministic), memoised in memory and cached on disk under ``$EQUITENSOR_CACHE`` (default
``~/.cache/equitensor``) keyed by ``(L, R, parity, e3nn phase convention)``.
``rank="full"`` (or any rank at least the number of non-zero ``(i, j)`` fibres) gives the exact
factorisation ``A = e_i, B = e_j, C = M[i, j, :]``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from .wigner import e3nn_phase_convention, triangle, wigner_3j

PATH_PARITIES = ("even", "odd")
#: bump when the fitting algorithm changes, so stale cache files are not reused.
_ALGORITHM_VERSION = 2


def default_rank(lmax: int) -> int:
    """The rank schedule of Tensor Decomposition Networks: ``7 L^2`` (at least 1)."""
    return max(1, 7 * lmax * lmax)


def _check_parity(path_parity: str) -> None:
    if path_parity not in PATH_PARITIES:
        raise ValueError(f"path_parity={path_parity!r}; expected one of {PATH_PARITIES}")


@functools.cache
def shared_path_cg_tensor(lmax: int, path_parity: str = "even") -> np.ndarray:
    """``M [d, d, d]`` with ``d = (lmax + 1)^2``: every allowed path's ``wigner_3j`` block, weight 1."""
    _check_parity(path_parity)
    d = (lmax + 1) ** 2
    out = np.zeros((d, d, d))
    want = 0 if path_parity == "even" else 1
    for l1 in range(lmax + 1):
        for l2 in range(lmax + 1):
            for l3 in range(lmax + 1):
                if triangle(l1, l2, l3) and (l1 + l2 + l3) % 2 == want:
                    out[l1 * l1 : (l1 + 1) ** 2, l2 * l2 : (l2 + 1) ** 2, l3 * l3 : (l3 + 1) ** 2] = (
                        wigner_3j(l1, l2, l3)
                    )
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class CPFactors:
    """``M ≈ einsum("ir,jr,kr->ijk", a, b, c)``; each factor is ``[d, rank]`` float64.

    ``residual_norm = ||M_hat - M||_F`` bounds the equivariance error of one product:
    ``|| f(Dx, Dy) - D f(x, y) || <= 2 * residual_norm * ||x|| * ||y||`` for orthogonal ``D``.
    """

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    lmax: int
    rank: int
    path_parity: str
    relative_error: float
    residual_norm: float

    def reconstruct(self) -> np.ndarray:
        return np.einsum("ir,jr,kr->ijk", self.a, self.b, self.c)


def cache_dir() -> Path:
    """``$EQUITENSOR_CACHE`` or ``~/.cache/equitensor``."""
    root = os.environ.get("EQUITENSOR_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "equitensor"


def _e3nn_version() -> str:
    try:
        return metadata.version("e3nn")
    except metadata.PackageNotFoundError:
        return "none"


def _exact_factors(tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = tensor.shape[0]
    pairs = np.argwhere(np.abs(tensor).max(axis=2) > 0)
    a = np.zeros((d, len(pairs)))
    b = np.zeros((d, len(pairs)))
    a[pairs[:, 0], np.arange(len(pairs))] = 1.0
    b[pairs[:, 1], np.arange(len(pairs))] = 1.0
    c = tensor[pairs[:, 0], pairs[:, 1], :].T.copy()
    return a, b, c


def full_rank(lmax: int, path_parity: str = "even") -> int:
    """Rank of the exact factorisation (number of non-zero ``M[i, j, :]`` fibres)."""
    return int((np.abs(shared_path_cg_tensor(lmax, path_parity)).max(axis=2) > 0).sum())


def _als(
    tensor: np.ndarray, rank: int, iterations: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alternating least squares with a line search (extrapolation) after every sweep.

    Plain ALS crawls through "swamps" on these tensors (L = 4, R = 7 L^2 stalled near 4e-3
    after 500 sweeps). After each sweep, the step from the previous factors is extrapolated by
    ``sweep^(1/3)`` (Bro's rule) and kept when it lowers the error; errors are evaluated from
    Gram matrices (``||T||^2 - 2 <T, M> + ||M||^2``), one extra MTTKRP per sweep.
    """
    d = tensor.shape[0]
    rng = np.random.default_rng(seed)
    factors = [rng.normal(size=(d, rank)) / np.sqrt(rank) for _ in range(3)]
    unfold = [
        tensor.reshape(d, d * d),
        tensor.transpose(1, 0, 2).reshape(d, d * d),
        tensor.transpose(2, 0, 1).reshape(d, d * d),
    ]
    ridge = 1e-10
    norm2 = float(np.sum(tensor * tensor))

    def mttkrp(f, mode):
        p, q = (f[j] for j in range(3) if j != mode)
        return unfold[mode] @ (p[:, None, :] * q[None, :, :]).reshape(d * d, rank)

    def sweep(f):
        f = list(f)
        for mode in range(3):
            p, q = (f[j] for j in range(3) if j != mode)
            gram = (p.T @ p) * (q.T @ q) + ridge * np.eye(rank)
            f[mode] = np.linalg.solve(gram, mttkrp(f, mode).T).T
        return f

    def squared_error(f):
        model = np.sum((f[0].T @ f[0]) * (f[1].T @ f[1]) * (f[2].T @ f[2]))
        return max(norm2 - 2 * np.sum(f[2] * mttkrp(f, 2)) + model, 0.0)

    error, previous = squared_error(factors), np.inf
    for sweep_index in range(1, iterations + 1):
        updated = sweep(factors)
        updated_error = squared_error(updated)
        step = sweep_index ** (1 / 3)
        trial = [new + step * (new - old) for new, old in zip(updated, factors)]
        trial_error = squared_error(trial)
        factors, error = (trial, trial_error) if trial_error < updated_error else (updated, updated_error)
        if sweep_index % 10:
            continue
        if previous - error < 2e-4 * error:  # squared errors: 1e-4 relative on the error itself
            break
        previous = error
    a, b, c = factors
    # balance the column norms so no factor carries all the scale (better float32 behaviour)
    scale = (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0) * np.linalg.norm(c, axis=0)) ** (1 / 3)
    for f in (a, b, c):
        f *= scale / np.maximum(np.linalg.norm(f, axis=0), 1e-300)
    return a, b, c


@functools.cache
def cp_factors(
    lmax: int, rank: int | str = "default", path_parity: str = "even", iterations: int = 500
) -> CPFactors:
    """Rank-``rank`` CP factors of :func:`shared_path_cg_tensor` (deterministic, cached).

    Args:
        lmax: highest degree ``L`` of all three modes.
        rank: an integer ``>= 1``, ``"default"`` (``7 L^2``) or ``"full"`` (exact).
        path_parity: ``"even"`` or ``"odd"`` (parity of ``l1 + l2 + l3`` of the included paths).
        iterations: maximum ALS sweeps.

    Raises:
        ValueError: rank < 1 or unknown parity.
    """
    _check_parity(path_parity)
    tensor = shared_path_cg_tensor(lmax, path_parity)
    exact_rank = full_rank(lmax, path_parity)
    if rank == "default":
        rank = default_rank(lmax)
    elif rank == "full":
        rank = exact_rank
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"CP rank must be an integer >= 1, 'default' (7 L^2) or 'full', got {rank!r}")
    rank = int(rank)
    norm = np.linalg.norm(tensor)
    if rank >= exact_rank or norm == 0:
        a, b, c = _exact_factors(tensor)
        if norm == 0:  # no path of this parity at all: the product is identically zero
            a, b, c = (
                np.zeros((tensor.shape[0], 1)),
                np.zeros((tensor.shape[0], 1)),
                np.zeros((tensor.shape[0], 1)),
            )
    else:
        path = (
            cache_dir()
            / "cp"
            / (
                f"cg_L{lmax}_R{rank}_{path_parity}_phase{e3nn_phase_convention()}_e3nn{_e3nn_version()}"
                f"_it{iterations}_v{_ALGORITHM_VERSION}.npz"
            )
        )
        if path.exists():
            with np.load(path) as stored:
                a, b, c = stored["a"], stored["b"], stored["c"]
        else:
            a, b, c = _als(tensor, rank, iterations, seed=lmax * 1000 + rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, a=a, b=b, c=c)
            os.replace(tmp, path)
    # the exact factorisation is exact by construction (and its rank ~d^2 makes a d^3 R check costly)
    exact = rank >= exact_rank or norm == 0
    residual = (
        0.0 if exact else float(np.linalg.norm(np.einsum("ir,jr,kr->ijk", a, b, c, optimize=True) - tensor))
    )
    for f in (a, b, c):
        f.setflags(write=False)
    return CPFactors(a, b, c, lmax, a.shape[1], path_parity, residual / norm if norm else 0.0, residual)
