"""Conversion rules: ATen operators drawn in the paper's vocabulary, with their axis names.

The core idioms live in six modules, registered in this order (their rules' order in the registry):

* :mod:`ncd.trace.idioms_wires`: aliases (``dropout`` in eval, ``clone``, ``to`` the same dtype, ...) are wires;
  ``view``/``reshape``/``(un)squeeze``/``flatten`` regroup wires (a split names its parts ``h`` and ``k``, heads and
  head features; a merge of a split gives the old name back); ``permute``/``transpose`` are crossings;
* :mod:`ncd.trace.idioms_linear`: ``linear`` (and ``view → addmm → view``, ``x @ W``) is a learned map **L** that keeps
  the leading axes and names a new feature axis (the same name when the width is unchanged); ``matmul``/``bmm`` are
  einsum wirings on named axes (the second operand's wires are renamed where a name would otherwise wrongly join two
  axes);
* :mod:`ncd.trace.idioms_arithmetic`: ``softmax`` lands on the named axis; elementwise maps, residual additions,
  products, scalings and sums keep their names;
* :mod:`ncd.trace.idioms_layers`: embeddings, layer and RMS norms, convolutions;
* :mod:`ncd.trace.idioms_slicing`: ``split``, ``slice``, ``narrow``, ``select``, ``cat``, ``stack``;
* :mod:`ncd.trace.idioms_pooling`: pooling and batch normalisation.

``scaled_dot_product_attention`` is drawn as the paper's attention (:mod:`ncd.trace.attention`: scores einsum, scale,
mask, softmax on the key axis, value einsum), grouped-query attention as an inner broadcast; the rules beyond the core
idioms register after them (:func:`load_rules`).  Every name of the modules above is importable from here too.

A rule raises :class:`~ncd.trace.convert.Decline` to leave a call to the opaque box.
"""

from __future__ import annotations

from typing import Any

# the core idioms register on import, in this order
# isort: off
from ncd.trace.idioms_wires import _fused_input as _fused_input
from ncd.trace.idioms_wires import _is_item as _is_item
from ncd.trace.idioms_wires import _live as _live
from ncd.trace.idioms_wires import _shape as _shape
from ncd.trace.idioms_wires import _tensor as _tensor
from ncd.trace.idioms_wires import _weight as _weight
from ncd.trace.idioms_wires import alias as alias
from ncd.trace.idioms_wires import dropout as dropout
from ncd.trace.idioms_wires import permute as permute
from ncd.trace.idioms_wires import regroup as regroup
from ncd.trace.idioms_wires import reshape as reshape
from ncd.trace.idioms_linear import _fused_projection as _fused_projection
from ncd.trace.idioms_linear import _linear_2d as _linear_2d
from ncd.trace.idioms_linear import addmm as addmm
from ncd.trace.idioms_linear import contract as contract
from ncd.trace.idioms_linear import emit_linear as emit_linear
from ncd.trace.idioms_linear import linear as linear
from ncd.trace.idioms_linear import linear_out_name as linear_out_name
from ncd.trace.idioms_linear import matmul as matmul
from ncd.trace.idioms_linear import relabel as relabel
from ncd.trace.idioms_arithmetic import UNARY as UNARY
from ncd.trace.idioms_arithmetic import arithmetic as arithmetic
from ncd.trace.idioms_arithmetic import bind_product as bind_product
from ncd.trace.idioms_arithmetic import cross_back as cross_back
from ncd.trace.idioms_arithmetic import operand as operand
from ncd.trace.idioms_arithmetic import out_names as out_names
from ncd.trace.idioms_arithmetic import power as power
from ncd.trace.idioms_arithmetic import reduce as reduce
from ncd.trace.idioms_arithmetic import softmax as softmax
from ncd.trace.idioms_arithmetic import unary as unary
from ncd.trace.scale_factors import SYMBOLIZED as SYMBOLIZED
from ncd.trace.scale_factors import _factor as _factor
from ncd.trace.scale_factors import _scale as _scale
from ncd.trace.scale_factors import count_of as count_of
from ncd.trace.scale_factors import size_constant as size_constant
from ncd.trace.scale_factors import written as written
from ncd.trace.idioms_layers import _embedding_role as _embedding_role
from ncd.trace.idioms_layers import _ints as _ints
from ncd.trace.idioms_layers import convolution as convolution
from ncd.trace.idioms_layers import embedding as embedding
from ncd.trace.idioms_layers import layer_norm as layer_norm
from ncd.trace.idioms_layers import rms_norm as rms_norm
from ncd.trace.idioms_slicing import _slice_role as _slice_role
from ncd.trace.idioms_slicing import concat as concat
from ncd.trace.idioms_slicing import emit_slice as emit_slice
from ncd.trace.idioms_slicing import narrow as narrow
from ncd.trace.idioms_slicing import select as select
from ncd.trace.idioms_slicing import slice_ as slice_
from ncd.trace.idioms_slicing import split as split
from ncd.trace.idioms_slicing import stack as stack
from ncd.trace.idioms_pooling import _CHECKED_CHANNELS as _CHECKED_CHANNELS
from ncd.trace.idioms_pooling import _standardise as _standardise
from ncd.trace.idioms_pooling import batch_norm as batch_norm
from ncd.trace.idioms_pooling import pool as pool
# isort: on
from ncd.trace.convert import Converter

__all__ = ["load_rules", "prepare"]


def load_rules() -> None:
    """Rules register on import (this module, the ``boxes*``, ``indexing*`` modules, :mod:`ncd.trace.scalars`, ...)."""
    import ncd.trace.attention  # noqa: F401
    import ncd.trace.boxes  # noqa: F401  (newprims: roll, pad, cumsum, ...; its siblings below)
    import ncd.trace.boxes_bags  # noqa: F401  (imports boxes_losses)
    import ncd.trace.boxes_binary  # noqa: F401  (atan2, hypot, logaddexp, fmod, copysign, fmax, fmin)
    import ncd.trace.boxes_channels  # noqa: F401  (group norm, instance norm, prelu)
    import ncd.trace.boxes_complex  # noqa: F401  (imports boxes first: wraps its division rule)
    import ncd.trace.boxes_composed  # noqa: F401  (var_mean, nanmean, pairwise_distance, round(decimals), kron, ...)
    import ncd.trace.boxes_definitions  # noqa: F401  (addr, count_nonzero)
    import ncd.trace.boxes_einsum  # noqa: F401
    import ncd.trace.boxes_indexing  # noqa: F401
    import ncd.trace.boxes_integer  # noqa: F401  (integer ∘ integer tensors: imports scalars, hooks in front)
    import ncd.trace.boxes_losses  # noqa: F401
    import ncd.trace.boxes_pointwise  # noqa: F401  (addcmul, addcdiv, lerp)
    import ncd.trace.boxes_products  # noqa: F401  (baddbmm)
    import ncd.trace.boxes_ranking  # noqa: F401
    import ncd.trace.boxes_resampling  # noqa: F401  (interpolation, adaptive pooling)
    import ncd.trace.boxes_selection  # noqa: F401
    import ncd.trace.boxes_windows  # noqa: F401
    import ncd.trace.indexing  # noqa: F401
    import ncd.trace.indexing_scatter  # noqa: F401  (gather, scatter, scatter_add, index_add)
    import ncd.trace.recurrent  # noqa: F401  (LSTM, GRU, RNN as scans: recur)
    import ncd.trace.scalars  # noqa: F401
    import ncd.trace.triangular  # noqa: F401  (triangular solves and forward substitution: recur)


def prepare(conv: Converter) -> dict[int, Any]:
    """Pre-passes before the walk: idioms spanning several recorded operations mark the ones they replace as skipped;
    returns, for the node that stands for each of them, the function that emits it (called by the walk in its place)."""
    from ncd.trace.attention import prepare as attention
    from ncd.trace.buckets import find_buckets
    from ncd.trace.idioms_fill import find_fills
    from ncd.trace.moe import prepare as experts
    from ncd.trace.rotary_pairs import prepare as paired_rotations

    fills = find_fills(conv)  # (first: the experts' idiom reads the router after the mask it drops)
    attention(conv)
    return {**fills, **find_buckets(conv), **paired_rotations(conv), **experts(conv)}
