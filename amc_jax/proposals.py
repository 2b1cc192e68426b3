"""Trial moves for :func:`amc_jax.amc` and :func:`amc_jax.metropolis`.

A :class:`Proposal` is three pure functions, ``init``, ``propose`` and
``update``; pass one as ``amc(..., proposal=...)``. The moves:

* :func:`gaussian`: aMC's move, Eqs. (9)-(10) (the default);
* :func:`sparse`: a random subset of the entries moves;
* :func:`layerwise`: one leaf moves per step;
* :func:`orthogonal`: rotations of matrices, which keep singular values;
* :func:`discrete`: jumps between the levels of a grid (binary weights);
* :func:`partition`: different moves for different parts of the params.
"""

from amc_jax._src.proposals import Proposal
from amc_jax._src.proposals import discrete
from amc_jax._src.proposals import gaussian
from amc_jax._src.proposals import gaussian_move
from amc_jax._src.proposals import layerwise
from amc_jax._src.proposals import orthogonal
from amc_jax._src.proposals import partition
from amc_jax._src.proposals import sparse
from amc_jax._src.proposals import standard_normal_like

__all__ = (
    "Proposal",
    "discrete",
    "gaussian",
    "gaussian_move",
    "layerwise",
    "orthogonal",
    "partition",
    "sparse",
    "standard_normal_like",
)
