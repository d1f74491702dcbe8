"""Task similarity on task prompt vectors (paper Eq. 2-4).

sim(T1, T2) = (1/r^2) (sum_i v_i^1) . (sum_j v_j^2) is a dot product of the
row means, so everything below reduces a TPV to its mean row first: one pass
over the [r, d] data, then work on [n, d] or [n, n] only.
"""

from __future__ import annotations

from torch import Tensor


def rescale(tpvs: Tensor, alphas: Tensor) -> Tensor:
    """Token-level rescaling: row i of each TPV times alpha[i] (Eq. 6)."""
    return tpvs * alphas.unsqueeze(-1)


def mean_rows(tpvs: Tensor) -> Tensor:
    """[..., r, d] -> [..., d]: the per-TPV mean row that Eq. 2 dots."""
    return tpvs.sum(dim=-2) / tpvs.shape[-2]


def task_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Eq. 2 for `a`, `b` of shape [..., r, d] (leading dims broadcast)."""
    return (mean_rows(a) * mean_rows(b)).sum(dim=-1)


def similarity_matrix(tpvs: Tensor) -> Tensor:
    """Pairwise Eq. 2 over stacked TPVs [k, r, d] -> [k, k]."""
    means = mean_rows(tpvs)
    return means @ means.transpose(0, 1)
