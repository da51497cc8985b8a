"""The traced model's own ``state_dict`` loads into the lowered module (``lowered.load_state_dict(model.state_dict())``).

The lowered module's names follow the diagram (``l_plus_lin.weight`` for the model's ``lin.weight``), and a value may
be read from the model's tensor through a view (``w.T``, ``table[None]``, one half of a split).  :func:`by_model_name`
registers a load-state-dict pre-hook (:class:`ModelNames`) on the lowered module: given a state dict keyed by the
model's names, it puts each value under the lowered name, read from the model's tensor as the trace read it (the
entries at the traced offset, sizes and strides, reshaped as the lowered module holds it).  A state dict keyed by the
lowered names loads as before.  Tensors the trace made itself (constants no model tensor holds) keep the module's
values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["ModelNames", "by_model_name"]

#: lowered name -> (model name, sizes, strides, offset within the model tensor, the model tensor's shape)
Reading = tuple[str, tuple[int, ...], tuple[int, ...], int, tuple[int, ...]]


class ModelNames:
    """The pre-hook putting a state dict keyed by the model's names under the lowered module's (a class: it pickles)."""

    def __init__(self, readings: dict[str, Reading], unused: dict[str, str], known: frozenset[str]) -> None:
        self.readings, self.unused, self.known = readings, unused, known

    def __call__(self, module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        own = module.state_dict()
        models = {m for m, *_ in self.readings.values()} | set(self.unused)
        if prefix or set(own) <= set(state_dict) or not models <= set(state_dict):
            return  # keyed by the lowered names (or not the model's whole state): loaded as it is
        given = dict(state_dict)
        state_dict.clear()
        params = dict(module.named_parameters(remove_duplicate=False))
        errors = args[4] if len(args) > 4 else []
        for name, (model_name, size, stride, offset, *shape) in self.readings.items():
            if model_name in given and name in own:
                if shape and tuple(given[model_name].shape) != tuple(shape[0]):  # another model's shape: the entries
                    # at the traced offset and strides would be others (read silently before), so refused as torch does
                    errors.append(f"size mismatch for {model_name}: copying a param with shape "
                                  f"{tuple(given[model_name].shape)} from checkpoint, the shape in the traced model is "
                                  f"{tuple(shape[0])} (read into {name})")
                    continue
                value = given[model_name].detach().contiguous().flatten()
                state_dict[name] = value.as_strided(size, stride, offset).reshape(own[name].shape)
        for model_name, name in self.unused.items():
            if model_name in given:
                state_dict[name] = given[model_name]
        for name, p in params.items():  # a tied parameter's other names (a view of it: parametrizations.*.original)
            if name not in state_dict:
                same = next((n for n, q in params.items() if q is p and n in state_dict), None)
                if same is not None:
                    state_dict[name] = state_dict[same]
        missing = [k for k in given if k not in models and k not in self.known]  # (the model's others: tied names,
        # tensors the traced call did not read, which the lowered module does not hold)
        for name, value in own.items():  # what the trace made (constants no model tensor holds): the module's own
            if name not in state_dict and name not in params:
                state_dict[name] = value
        state_dict.update({k: given[k] for k in missing})  # (a key of neither: refused by a strict load, as it was)


def by_model_name(module: torch.nn.Module, model: torch.nn.Module | None, order: list[str],
                  flat: list[torch.Tensor], unused: tuple[tuple[str, torch.Tensor], ...]) -> None:
    """Register :class:`ModelNames` on ``module`` (lowered from the trace of ``model``, whose held tensors ``order``
    names in the order of the traced values ``flat``); nothing without the model."""
    if model is None:
        return
    import itertools

    import torch

    from ncd.trace.params import HOLDER

    known = frozenset(model.state_dict(keep_vars=True))
    tensors = [(n, t) for n, t in itertools.chain(model.named_parameters(remove_duplicate=False),
                                                   model.named_buffers(remove_duplicate=False))
               if n in known and t.device.type != "meta" and t.layout is torch.strided and t.is_contiguous()
               and t.numel()]  # (a sparse one is held dense: no reading of its storage); (a buffer not
    # in the model's state dict, registered persistent=False, keeps the lowered module's value, as a constant does)
    readings: dict[str, Reading] = {}
    for name, value in zip(order, flat):
        if value.device.type == "meta" or not value.numel() or name in readings:
            continue
        ptr = value.untyped_storage().data_ptr()
        low = value.storage_offset()
        high = low + sum((n - 1) * s for n, s in zip(value.shape, value.stride()))
        for model_name, t in tensors:
            if t.untyped_storage().data_ptr() == ptr and t.dtype == value.dtype and \
                    t.storage_offset() <= low and high < t.storage_offset() + t.numel():
                readings[name] = (model_name, tuple(value.shape), tuple(value.stride()), int(low - t.storage_offset()),
                                  tuple(int(n) for n in t.shape))
                break
    names = {n: f"{HOLDER}.{n}" for n, _ in unused if n in known}
    module._register_load_state_dict_pre_hook(ModelNames(readings, names, known), with_module=True)  # type: ignore[no-untyped-call]
