r"""The linear imputation of ROAD (Rong et al., ICML 2022), solved in torch on the input's device.

Every removed pixel :math:`i` takes the weighted mean of its in-image 8-neighbours :math:`j`
(orthogonal weight 1/6, diagonal 1/12, as in the paper's code); known pixels keep their values.
For the removed set :math:`U` and known set :math:`K` that is the sparse symmetric system

.. math:: s_i x_i - \sum_{j \in U} w_{ij} x_j = \sum_{j \in K} w_{ij} v_j, \qquad i \in U,

with :math:`s_i = \sum_j w_{ij}` over the neighbours inside the image. Its matrix is a principal
submatrix of a graph Laplacian, so it is positive definite whenever at least one pixel is known.

Solver: conjugate gradients in float64 on the 3x3 stencil (no matrix is built), preconditioned by
one geometric multigrid V-cycle in float32 (damped Jacobi smoothing, bilinear transfers, a dense
Cholesky solve on the coarsest grid; the preconditioner's precision only affects the speed). It
reaches a relative residual of 1e-10 in about 15-25 iterations at 224x224 whatever the removed
fraction, batched over samples, percentiles and channels, and matches a sparse direct solve to
float32 rounding of the result (1e-9 in float64). Plain CG needed 150-700 iterations. Why not
scipy: it is not a core dependency, and its direct solver would move every image to the CPU and
solve them one at a time; here all systems of a batch are solved at once on the model's device.
On Apple's MPS (no float64) CG runs in float32 to a residual of 1e-6.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["linear_imputation"]

_ORTHOGONAL = 1.0 / 6.0
_DIAGONAL = 1.0 / 12.0
_OMEGA = 0.8  # Jacobi damping; the smoother is convergent (eigenvalues of D^-1 A lie in (0, 2))
_SWEEPS = 2
_DENSE_MAX = 400  # coarsest grids up to this many cells are solved exactly (B x cells^2 memory)
_MAX_ITER = 500


def neighbour_sum(x: Tensor) -> Tensor:
    """Weighted sum of the 8 neighbours over the last two dims (zero outside the grid)."""
    h, w = x.shape[-2:]
    across = F.pad(x, (1, 1, 0, 0))
    across = across[..., :, :w] + across[..., :, 2:]
    down = F.pad(x, (0, 0, 1, 1))
    down = down[..., :h, :] + down[..., 2:, :]
    corners = F.pad(across, (0, 0, 1, 1))
    corners = corners[..., :h, :] + corners[..., 2:, :]
    return _ORTHOGONAL * (across + down) + _DIAGONAL * corners


def _transfer_kernel(like: Tensor) -> Tensor:
    k1 = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=like.dtype, device=like.device)
    return (k1[:, None] * k1[None, :]).view(1, 1, 4, 4)


class _Level:
    """One grid of the hierarchy: which cells are unknown and their neighbour-weight sums."""

    def __init__(self, unknown: Tensor, inside: Tensor) -> None:
        self.unknown = unknown  # (B, 1, h, w) 1 = removed pixel
        self.diag = neighbour_sum(inside) * inside  # (1, 1, h, w)
        self.inv_diag = torch.where(self.diag > 0, 1 / torch.where(self.diag > 0, self.diag, 1), 0)

    def apply(self, u: Tensor) -> Tensor:
        masked = self.unknown * u
        return self.unknown * (self.diag * masked - neighbour_sum(masked))

    def smooth(self, e: Tensor, r: Tensor) -> Tensor:
        for _ in range(_SWEEPS):
            e = e + _OMEGA * self.unknown * self.inv_diag * (r - self.apply(e))
        return e


class _Multigrid:
    """A symmetric V-cycle for the masked operator, used as the CG preconditioner."""

    def __init__(self, unknown: Tensor, inside: Tensor, levels: int) -> None:
        self.levels = [_Level(unknown, inside)]
        for _ in range(levels):
            inside = F.max_pool2d(inside, 2)
            unknown = -F.max_pool2d(-unknown, 2) * inside  # coarse cell unknown if all its children are
            self.levels.append(_Level(unknown, inside))
        self.kernel = _transfer_kernel(unknown)
        coarse = self.levels[-1]
        cells = coarse.unknown.shape[-2] * coarse.unknown.shape[-1]
        self.factor: Tensor | None = None
        if cells <= _DENSE_MAX:
            batch, _, h, w = coarse.unknown.shape
            basis = torch.eye(cells, dtype=unknown.dtype, device=unknown.device).view(1, cells, h, w)
            columns = coarse.apply(basis)  # (B, cells, h, w): column j is A e_j (A is symmetric)
            known = 1 - coarse.unknown.reshape(batch, cells)
            matrix = columns.reshape(batch, cells, cells) + torch.diag_embed(known)
            factor, info = torch.linalg.cholesky_ex(matrix)
            bad = info != 0  # cannot happen while a pixel is known; fall back to the identity
            eye = torch.eye(cells, dtype=matrix.dtype, device=matrix.device)
            self.factor = torch.where(bad.view(-1, 1, 1), eye, factor)

    def _restrict(self, r: Tensor) -> Tensor:
        b, c, h, w = r.shape
        return F.conv2d(r.reshape(b * c, 1, h, w), self.kernel, stride=2, padding=1).view(b, c, h // 2, w // 2)

    def _prolong(self, e: Tensor) -> Tensor:
        b, c, h, w = e.shape
        return F.conv_transpose2d(e.reshape(b * c, 1, h, w), self.kernel, stride=2, padding=1).view(b, c, 2 * h, 2 * w)

    def _coarsest(self, r: Tensor) -> Tensor:
        level = self.levels[-1]
        if self.factor is None:
            return level.smooth(level.smooth(torch.zeros_like(r), r), r)
        b, c, h, w = r.shape
        rhs = (level.unknown * r).reshape(b, c, h * w).transpose(1, 2)
        return level.unknown * torch.cholesky_solve(rhs, self.factor).transpose(1, 2).reshape(b, c, h, w)

    def cycle(self, r: Tensor, depth: int = 0) -> Tensor:
        """Approximate ``A^-1 r`` on level ``depth``."""
        if depth == len(self.levels) - 1:
            return self._coarsest(r)
        level, below = self.levels[depth], self.levels[depth + 1]
        e = level.smooth(torch.zeros_like(r), r)
        coarse = below.unknown * self._restrict(level.unknown * (r - level.apply(e)))
        e = e + level.unknown * self._prolong(self.cycle(coarse, depth + 1))
        return level.smooth(e, r)


def _solve_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def linear_imputation(values: Tensor, removed: Tensor) -> Tensor:
    """Fill the removed pixels of each image with the solution of the ROAD linear system.

    Args:
        values: ``(B, C, H, W)`` images.
        removed: ``(B, H, W)`` booleans, True where a pixel is to be imputed; every image must keep
            at least one pixel.

    Returns:
        ``(B, C, H, W)`` in the dtype of ``values``: known pixels unchanged, removed ones imputed.
    """
    h, w = values.shape[-2:]
    dtype = _solve_dtype(values.device)
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    levels = max(0, math.floor(math.log2(max(min(h, w), 1) / 4)))
    step = 2**levels
    ph, pw = -h % step, -w % step
    unknown = F.pad(removed.to(dtype).unsqueeze(1), (0, pw, 0, ph))
    inside = F.pad(torch.ones(1, 1, h, w, dtype=dtype, device=values.device), (0, pw, 0, ph))
    image = F.pad(values.to(dtype), (0, pw, 0, ph))
    # The preconditioner (most of the work) runs in float32; CG itself in ``dtype``, so the
    # solution's accuracy is that of ``dtype``.
    grid = _Multigrid(unknown.float(), inside.float(), levels)
    fine = _Level(unknown, inside)
    rhs = unknown * neighbour_sum((1 - unknown) * image)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = grid.cycle(r.float()).to(dtype)
    p = z.clone()
    rz = (r * z).sum(dim=(-2, -1), keepdim=True)
    scale = rhs.flatten(2).norm(dim=2).clamp_min(torch.finfo(dtype).tiny)
    for _ in range(_MAX_ITER):
        ap = fine.apply(p)
        pap = (p * ap).sum(dim=(-2, -1), keepdim=True)
        alpha = rz / torch.where(pap > 0, pap, torch.ones_like(pap))
        x = x + alpha * p
        r = r - alpha * ap
        residual = float((r.flatten(2).norm(dim=2) / scale).max())
        if residual <= tol:
            break
        z = grid.cycle(r.float()).to(dtype)
        rz_next = (r * z).sum(dim=(-2, -1), keepdim=True)
        p = z + rz_next / torch.where(rz != 0, rz, torch.ones_like(rz)) * p
        rz = rz_next
    else:
        warnings.warn(
            f"ROAD imputation stopped after {_MAX_ITER} iterations at a relative residual of {residual:.2e} "
            f"(target {tol:.0e}); the imputed values are approximate",
            RuntimeWarning,
            stacklevel=3,
        )
    filled = torch.where(unknown.bool(), x, image)[..., :h, :w]
    return filled.to(values.dtype)
