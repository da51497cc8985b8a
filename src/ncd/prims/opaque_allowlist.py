"""The ATen operators an opaque box of an untrusted diagram file may call.

An opaque box calls an ATen operator with captured constant arguments.  A diagram file is
data, so :func:`ncd.load_json` accepts only the *pure tensor functions* listed here: their
results depend only on their arguments, and they touch no file, process, network, storage
shared with anything else, or global random state.  Each overload must moreover pass
:func:`side_effects` on its schema (no argument written, no ``out=`` variant, no random draw,
no uninitialised memory, no output shape that depends on the data).  Files you trust can name
any operator: ``ncd.load_json(text, trust=True)``.  Diagrams made by ``ncd.trace`` in the same
process are trusted (they come from the user's own model).

>>> check_allowed("aten.cumsum.default")
>>> check_allowed("aten.from_file.default")  # doctest: +ELLIPSIS
Traceback (most recent call last):
ncd.errors.ParseError: operator aten.from_file.default may reach files, storage, randomness, raw memory or processes, ...
>>> side_effects("aten.add_.Tensor")
['writes to its arguments', 'is an in-place operator', 'returns a tensor it wrote to']
"""

from __future__ import annotations

from typing import Any

from ncd.errors import ParseError

__all__ = ["ALLOWED", "check_allowed", "side_effects"]

_POINTWISE = """
abs absolute neg negative positive exp exp2 expm1 log log2 log10 log1p sqrt rsqrt sin cos tan asin acos atan
arcsin arccos arctan sinh cosh tanh asinh acosh atanh sigmoid logit erf erfc erfinv sign sgn signbit floor ceil round
trunc fix frac reciprocal square relu relu6 gelu silu mish hardtanh hardsigmoid hardswish elu selu celu leaky_relu
softplus softshrink hardshrink threshold logical_not bitwise_not isnan isinf isposinf isneginf isfinite
nan_to_num clamp clamp_min clamp_max clip deg2rad rad2deg digamma lgamma sinc i0 xlogy lerp addcmul addcdiv glu
prelu _prelu_kernel
add sub subtract mul multiply div divide true_divide floor_divide rsub pow float_power remainder fmod maximum minimum
fmax fmin atan2 arctan2 hypot copysign logaddexp logaddexp2 heaviside eq ne lt le gt ge equal isclose
logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor bitwise_left_shift bitwise_right_shift
__and__ __or__ __xor__ __lshift__ __rshift__ isin
where masked_fill special_erfinv
special_airy_ai special_bessel_j0 special_bessel_j1 special_bessel_y0 special_bessel_y1 special_chebyshev_polynomial_t
special_chebyshev_polynomial_u special_chebyshev_polynomial_v special_chebyshev_polynomial_w special_entr special_erfcx
special_hermite_polynomial_h special_hermite_polynomial_he special_i0e special_i1 special_i1e
special_log_ndtr special_modified_bessel_i0
special_modified_bessel_i1 special_modified_bessel_k0 special_modified_bessel_k1 special_ndtr special_ndtri
special_scaled_modified_bessel_k0 special_scaled_modified_bessel_k1 special_shifted_chebyshev_polynomial_t
special_shifted_chebyshev_polynomial_u special_shifted_chebyshev_polynomial_v special_shifted_chebyshev_polynomial_w
special_spherical_bessel_j0 special_xlog1py special_zeta
tanh_backward sigmoid_backward threshold_backward gelu_backward silu_backward
"""
# (not special_laguerre_polynomial_l, special_legendre_polynomial_p: torch runs n steps per entry, and n is a number
# the file writes, up to a float of 1e308: an untrusted file could make the call run for hours)
_REDUCTIONS = """
sum nansum mean nanmean prod count_nonzero amax amin max min argmax argmin var std var_mean std_mean norm
linalg_vector_norm frobenius_norm logsumexp all any cumsum cumprod cummax cummin logcumsumexp aminmax sort argsort
topk kthvalue median nanmedian softmax _softmax log_softmax _log_softmax special_softmax special_log_softmax
mode quantile nanquantile renorm
"""
_LINEAR = """
mm bmm matmul addmm addbmm baddbmm addmv mv dot vdot outer ger einsum linear bilinear tensordot kron tril triu
diag diag_embed block_diag addr trace cross linalg_cross cdist _cdist_forward _euclidean_dist cosine_similarity
pairwise_distance binary_cross_entropy cross_entropy_loss nll_loss_nd linalg_multi_dot stft
convolution _convolution conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d
max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d _adaptive_avg_pool3d
adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d max_unpool2d max_unpool3d
upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d
upsample_linear1d upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d pixel_shuffle pixel_unshuffle
im2col col2im grid_sampler grid_sampler_2d grid_sampler_3d affine_grid_generator
native_layer_norm layer_norm group_norm native_group_norm rms_norm _native_batch_norm_legit_no_training
batch_norm embedding embedding_bag _embedding_bag embedding_renorm one_hot scaled_dot_product_attention
_scaled_dot_product_flash_attention_for_cpu
_upsample_bilinear2d_aa _upsample_bicubic2d_aa histc
det linalg_det logdet slogdet linalg_slogdet matrix_exp linalg_matrix_exp inverse linalg_inv linalg_solve cholesky
linalg_cholesky
"""
_INDEXING = """
gather index_select take_along_dim take index scatter scatter_add scatter_reduce index_add index_copy index_fill
index_put masked_scatter slice_scatter select_scatter diagonal_scatter searchsorted bucketize
"""
_MOVEMENT = """
channel_shuffle native_channel_shuffle cartesian_prod
cat concat concatenate stack hstack vstack flip fliplr flipud roll rot90 repeat tile repeat_interleave pad
constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d
replication_pad3d clone contiguous _to_copy to type_as lift_fresh_copy
permute transpose t mT mH adjoint view reshape _unsafe_view expand expand_as squeeze unsqueeze flatten unflatten select slice
narrow split split_with_sizes chunk tensor_split unbind movedim moveaxis swapaxes swapdims unfold diagonal view_as
_reshape_alias permute_copy transpose_copy view_copy expand_copy squeeze_copy unsqueeze_copy select_copy slice_copy
split_copy split_with_sizes_copy unbind_copy diagonal_copy t_copy
view_as_real view_as_complex polar complex real imag angle conj _conj resolve_conj resolve_neg
fft_fft fft_ifft fft_rfft fft_irfft fft_fft2 fft_ifft2 fft_rfft2 fft_irfft2 fft_fftn fft_ifftn fft_rfftn fft_irfftn
_fft_r2c _fft_c2r _fft_c2c fft_fftshift fft_ifftshift
arange zeros ones full zeros_like ones_like full_like eye linspace logspace scalar_tensor new_zeros new_ones new_full
"""
# (not combinations: torch builds all n**r tuples before keeping the sorted ones, and r is a number the file writes:
# r = 5 of 40 entries took 1.9 GB and 17 s, of 64 entries ~20 GB)

#: Operator names (the middle part of ``aten.<name>.<overload>``) an untrusted file may call.
ALLOWED: frozenset[str] = frozenset((_POINTWISE + _REDUCTIONS + _LINEAR + _INDEXING + _MOVEMENT).split())

#: Recurrent layers (``nn.LSTM`` with ``proj_size``, …): seeded only by the dropout between layers, so pure when
#: the call's own arguments switch it off (:func:`_without_dropout`).
_RECURRENT = frozenset({"lstm", "gru", "rnn_tanh", "rnn_relu"})
#: Attention kernels: seeded only by their ``dropout_p`` (default 0), so pure when it is exactly zero (an opaque
#: ``F.scaled_dot_product_attention`` under a mask the attention rule does not read: a window ending at the last query and key).
_ATTENTION = frozenset({"scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu"})
_RANDOM = "draws from the global random state"

#: Words that mark an operator as touching more than its tensors, whatever its schema says.
_SUSPECT = ("file", "storage", "share", "set_", "random", "rand", "seed", "dropout", "bernoulli", "multinomial",
            "normal", "uniform", "exponential", "geometric", "cauchy", "log_normal", "poisson", "empty", "print",
            "save", "load", "record_stream", "_local_scalar", "item", "sym_", "_assert", "_foreach", "_fused", "cuda",
            "mkldnn", "pin_memory", "resize", "copy_", "fill_", "zero_", "detach_", "_version", "data_ptr", "async",
            "wait", "allreduce", "process", "_c10d", "to_padded", "nonzero", "unique", "masked_select")
#: Names holding a suspect word that are pure nonetheless (``count_nonzero``: a sum of flags, of a declared shape).
_INNOCENT = frozenset({"count_nonzero"})


def side_effects(target: str) -> list[str]:
    """What the ATen overload ``target`` does besides computing from its arguments (empty: nothing).

    Read from its schema: written (mutable) arguments, ``out=`` variants, in-place and
    view-mutating tags, a random generator or seeded randomness, uninitialised memory, output
    shapes that depend on tensor values, and names of file, storage, process or
    communication operators.
    """
    import torch

    from ncd.prims.opaque import resolve_target

    overload = resolve_target(target)
    assert isinstance(overload, torch._ops.OpOverload)
    schema = overload._schema
    name = target.split(".")[1]
    found: list[str] = []
    if schema.is_mutable or any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
        found.append("writes to its arguments")
    if any(a.is_out for a in schema.arguments) or schema.overload_name.startswith("out") or "_out" in schema.overload_name:
        found.append("writes into an out= tensor")
    tags = set(overload.tags)
    if torch.Tag.inplace_view in tags or torch.Tag.inplace in tags or name.endswith("_") and not name.startswith("_"):
        found.append("is an in-place operator")
    if torch.Tag.nondeterministic_seeded in tags or any("Generator" in str(a.type) for a in schema.arguments):
        found.append(_RANDOM)
    if torch.Tag.dynamic_output_shape in tags or torch.Tag.data_dependent_output in tags:
        found.append("has an output that depends on tensor values in ways the diagram cannot declare")
    if name not in _INNOCENT and any(word in name for word in _SUSPECT):
        found.append("may reach files, storage, randomness, raw memory or processes")
    if any(str(a.type).startswith(("Storage", "Stream", "__torch__", "Any", "Capsule")) for a in schema.arguments):
        found.append("takes a storage, stream or object argument")
    if any(r.alias_info is not None and r.alias_info.is_write for r in schema.returns):
        found.append("returns a tensor it wrote to")
    return found


def _writes_statistics(target: str, args: tuple[Any, ...] | None) -> bool:
    """Whether a ``batch_norm`` call updates running statistics in place (training with ``running_mean`` or
    ``running_var`` given): it writes into its inputs.  Evaluation, or training without running statistics
    (``track_running_stats=False``: the batch's own), computes from its arguments alone."""
    if target.split(".")[1] != "batch_norm":
        return False
    if args is None or len(args) < 6:
        return True
    return args[5] is not False and (args[3] is not None or args[4] is not None)


def check_allowed(target: str, args: tuple[Any, ...] | None = None, kwargs: Any = ()) -> None:
    """Refuse an operator an untrusted diagram may not call (:class:`~ncd.errors.ParseError` naming it); ``args`` and
    ``kwargs`` (``(name, value)`` pairs), the call's arguments, where they decide it (``batch_norm``: allowed unless it
    updates running statistics; a recurrent layer, ``lstm``/``gru``/``rnn_*``, or an attention kernel,
    ``scaled_dot_product_attention``: allowed when it drops nothing, :func:`_without_dropout`).

    >>> check_allowed("aten.batch_norm.default", (("$in", 0), None, None, None, None, True, 0.1, 1e-5, True))
    >>> check_allowed("aten.batch_norm.default", tuple(("$in", k) for k in range(5)) + (True, 0.1, 1e-5, True))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ncd.errors.ParseError: operator aten.batch_norm.default updates running statistics in place (training), ...
    """
    if _writes_statistics(target, args):
        raise ParseError(f"operator {target} updates running statistics in place (training), so an untrusted diagram"
                         " may not call it; load the file with ncd.load_json(text, trust=True) only if you trust it")
    effects = side_effects(target)  # an unknown operator is refused here, by name
    if _RANDOM in effects and _without_dropout(target, args, kwargs):
        effects.remove(_RANDOM)
    if effects:
        raise ParseError(f"operator {target} {' and '.join(effects)}, so an untrusted diagram may not call it;"
                         " load the file with ncd.load_json(text, trust=True) only if you trust it")
    if target.split(".")[1] not in ALLOWED and not _without_dropout(target, args, kwargs):
        raise ParseError(f"operator {target} is not on ncd's allowlist of pure tensor operators"
                         " (ncd.prims.opaque_allowlist); load the file with ncd.load_json(text, trust=True) only if you"
                         " trust it")


def _without_dropout(target: str, args: tuple[Any, ...] | None, kwargs: Any = ()) -> bool:
    """Whether a recurrent layer's call (``aten.lstm.input`` …) or an attention kernel's draws nothing: a recurrent
    layer's ``train`` argument is ``False`` or its ``dropout`` exactly zero (ATen drops between layers only when
    training with a positive rate); an attention kernel's ``dropout_p``, given (by position or name) or its schema's
    default, exactly zero.  Read by the schema's argument names; anything else (a required argument missing, an unknown
    one, one given twice, a string, a NaN rate) is not proof.

    >>> _without_dropout("aten.scaled_dot_product_attention.default", (("$in", 0), ("$in", 1), ("$in", 2)))
    True
    >>> _without_dropout("aten.scaled_dot_product_attention.default", (("$in", 0), ("$in", 1), ("$in", 2), None, 0.1))
    False
    """
    import torch

    from ncd.prims.opaque import resolve_target

    name = target.split(".")[1]
    if name not in _RECURRENT | _ATTENTION or not isinstance(args, (tuple, list)):
        return False
    overload = resolve_target(target)
    assert isinstance(overload, torch._ops.OpOverload)
    arguments = overload._schema.arguments
    names = [a.name for a in arguments]
    if name in _RECURRENT:
        if "train" not in names or "dropout" not in names or len(args) != len(names) or kwargs:
            return False
        train, dropout = args[names.index("train")], args[names.index("dropout")]
        return train is False or type(dropout) in (int, float) and dropout == 0
    given = _named(arguments, args, kwargs)
    if given is None or "dropout_p" not in names or any(a.name not in given for a in arguments if not a.has_default_value()):
        return False
    rate = given["dropout_p"] if "dropout_p" in given else arguments[names.index("dropout_p")].default_value
    return type(rate) in (int, float) and rate == 0


def _named(arguments: Any, args: tuple[Any, ...] | list[Any], kwargs: Any) -> dict[str, Any] | None:
    """The call's arguments by the schema's names (``None``: more positional ones than the schema takes, a keyword it
    does not name or one already given by position, pairs that are not ``(name, value)``)."""
    positional = [a.name for a in arguments if not a.kwarg_only]
    if len(args) > len(positional) or not isinstance(kwargs, (tuple, list)):
        return None
    given = dict(zip(positional, args))
    known = {a.name for a in arguments}
    for pair in kwargs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], str) \
                or pair[0] not in known or pair[0] in given:
            return None
        given[pair[0]] = pair[1]
    return given
