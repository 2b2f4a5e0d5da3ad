"""Make unstructured sparsity pay: swap pruned layers for sparse kernels where, and only where, they are faster.

Masked weights cost as much time as any other weight in a dense product. :func:`compile_sparse` times each pruned
``Linear``/``Conv1d`` on the very inputs it sees in one forward pass (dense vs CSR vs BSR at a few block sizes),
keeps the fastest sparse kernel only if it beats dense by ``min_speedup``, and returns a JSON plan of the choices.
Which kernel wins depends on the shape, the batch size, the thread count and the machine, so it is measured, never
assumed. :func:`apply_plan` replays a plan on a freshly loaded model without timing again (what loading a compiled
run does). Compiled models save exactly the dense-with-zeros state dict of the masked model under the same keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tsprune.errors import TsPruneError
from tsprune.runtime import pinned_threads
from tsprune.sparse import attention as fused_attention
from tsprune.sparse import kernel as pcsr
from tsprune.sparse.timing import Key, capture_inputs, choose_kernel, device_of, time_candidates
from tsprune.sparse.rewrites import (
    attention_usable,
    choose_attention,
    choose_epilogues,
    fuse_epilogues,
    two_layer_blocks,
    unfuse_epilogues,
)
from tsprune.sparse.layers import (
    LAYOUTS,
    OWN_KERNEL,
    SparseConv1d,
    SparseLinear,
    SkippedLinear,
    SparseWeight,
    ZeroLinear,
    conv1d_supported,
    densify,
    sparsify,
    weight_of,
)

__all__ = ["SparseConv1d", "SparseLinear", "apply_plan", "capture_inputs", "choose_kernel", "compile_sparse",
           "dense_state_dict", "densify_model", "sparse_candidates", "time_candidates"]

PLAN_FORMAT = "tsprune-sparse-plan/2"
OLD_PLAN_FORMATS = ("tsprune-sparse-plan/1",)  # called each layer's kernel its "engine"; loads
BLOCKS = (4, 8, 16)

STRUCTURAL = {"zero": ZeroLinear, "skip": SkippedLinear}  # exact rewrites that need no timing


# ------------------------------------------------------------------------------------------------ layers


def weight_density(module: nn.Module) -> float:
    weight = weight_of(module).detach()
    return int(torch.count_nonzero(weight)) / weight.numel() if weight.numel() else 1.0


def sparse_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """``{qualified name: layer}`` of the dense ``Linear``/``Conv1d`` layers with zeros (density < 1), each once."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        supported = isinstance(module, nn.Linear) or (isinstance(module, nn.Conv1d) and conv1d_supported(module))
        if supported and weight_density(module) < 1.0:
            found[name] = module
    return found


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    """Put ``new`` wherever ``old`` is registered (every alias of a shared layer); returns the (new) root."""
    names = [name for name, module in model.named_modules(remove_duplicate=False) if module is old]
    if "" in names:
        return new
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model


def _blocks(module: nn.Module, blocks: Sequence[int]) -> list[int]:
    """The BSR block sizes that tile ``module``'s weight matrix ``[out, in * k]`` exactly."""
    shape = weight_of(module).shape
    rows, cols = shape[0], math.prod(shape[1:])
    return [b for b in blocks if rows % b == 0 and cols % b == 0]


def _kind(module: nn.Module) -> str:
    return "conv1d" if isinstance(module, (nn.Conv1d, SparseConv1d)) else "linear"


# ------------------------------------------------------------------------------------------------ compile


def _resolve_inputs(inputs: Mapping[int, Sequence[Tensor]] | Sequence[Tensor], batch_size: int | None
                    ) -> tuple[tuple[Tensor, ...], int]:
    if isinstance(inputs, Mapping):
        if batch_size is None:
            if len(inputs) != 1:
                raise TsPruneError(f"say which batch size to compile for: inputs are given for {sorted(inputs)}")
            batch_size = next(iter(inputs))
        if batch_size not in inputs:
            raise TsPruneError(f"no example inputs for batch size {batch_size} (have {sorted(inputs)})")
        chosen = tuple(inputs[batch_size])
    else:
        chosen = tuple(inputs)
    size = int(chosen[0].shape[0])
    if batch_size is not None and size != batch_size:
        raise TsPruneError(f"the example inputs have batch size {size}, not {batch_size}")
    return chosen, size


def _entry(module: nn.Module, density: float, key: Key, timings: Mapping[Key, float] | None) -> dict[str, Any]:
    """One layer's plan record (JSON-serialisable)."""
    timings = timings or {}
    bsr = {block: ms for (kernel, block), ms in timings.items() if kernel == "bsr"}
    best_block = min(bsr, key=bsr.__getitem__) if bsr else None
    return {
        "kind": _kind(module), "shape": list(weight_of(module).shape), "kernel": key[0], "block": key[1],
        "density": density, "dense_ms": timings.get(("dense", None)), "csr_ms": timings.get(("csr", None)),
        "pcsr_ms": timings.get((OWN_KERNEL, None)),
        "bsr_ms": bsr.get(best_block) if bsr else None, "bsr_block": best_block,
        "bsr_ms_by_block": {str(block): ms for block, ms in bsr.items()}, "chosen_ms": timings.get(key),
    }


def _forced_key(module: nn.Module, force: str, blocks: Sequence[int], block: int | None) -> Key:
    if force == OWN_KERNEL and own_kernel_usable(module):
        return (OWN_KERNEL, None)
    if force in ("csr", OWN_KERNEL):  # pcsr where it cannot run: torch's CSR, as without the kernel
        return ("csr", None)
    if block is not None:
        return ("bsr", block)
    fitting = _blocks(module, blocks)
    return ("bsr", max(fitting) if fitting else 1)


def compile_sparse(
    model: nn.Module,
    inputs: Mapping[int, Sequence[Tensor]] | Sequence[Tensor],
    batch_size: int | None = None,
    threads: int | None = None,
    min_speedup: float = 1.05,
    repeats: int = 10,
    warmup: int = 2,
    blocks: Sequence[int] = BLOCKS,
    layouts: Sequence[str] = LAYOUTS,
    force: str | None = None,
    block: int | None = None,
    attention: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Replace, in place, each pruned layer of ``model`` by its fastest sparse kernel when that beats dense.

    ``inputs`` is ``model``'s forward arguments, or ``{batch size: arguments}`` with ``batch_size`` picking one.
    Every ``Linear``/``Conv1d`` with zeros is timed on the inputs it receives in one forward pass, with
    ``threads`` threads: dense, then each of ``layouts``: tsprune's own kernel (pcsr, where it builds and the layer
    is float32 on CPU), torch's CSR, and BSR for each of ``blocks`` that tiles the weight. A sparse kernel replaces
    the layer only if ``dense_ms >= min_speedup * sparse_ms``. ``force="pcsr"|"csr"|"bsr"`` skips timing and
    sparsifies every candidate (pcsr where it can run, else CSR; BSR with ``block``, else the largest of ``blocks``
    that fits, else 1). Before any timing, all-zero output layers of two-layer blocks and the layers feeding them
    are rewritten exactly (:func:`_remove_dead_products`). Afterwards the activation between a feed-forward block's
    two layers folds into the first one's pcsr kernel if the model measures faster so (:func:`choose_epilogues`),
    and with ``attention``, the model's attention over a few
    keys then runs in tsprune's fused op (:mod:`tsprune.sparse.attention`) if the whole model measures faster with
    it (:func:`choose_attention`; with ``force``, wherever the op can run). Returns ``(model, plan)``; the plan is
    JSON-serialisable and replayable with :func:`apply_plan`.
    """
    if force is not None and force not in LAYOUTS:
        raise TsPruneError(f"unknown sparse layout {force!r}: use one of {', '.join(LAYOUTS)}")
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        raise TsPruneError(f"unknown sparse layout(s) {sorted(unknown)}: use {', '.join(LAYOUTS)}")
    args, size = _resolve_inputs(inputs, batch_size)
    model, structural = _remove_dead_products(model)
    layers = sparse_candidates(model)
    densities = {name: weight_density(module) for name, module in layers.items()}
    with pinned_threads(threads) as used:
        calls = capture_inputs(model, layers, args) if force is None and layers else {}
        entries: dict[str, dict[str, Any]] = {}
        for name, module in layers.items():
            timings = None
            if force is not None:
                key = _forced_key(module, force, blocks, block)
            elif not calls[name]:
                key = ("dense", None)  # never called at this input: nothing to gain
            else:
                timings = _time_layer(module, calls.pop(name), blocks, layouts, repeats, warmup)
                key = choose_kernel(timings, min_speedup)
            entries[name] = _entry(module, densities[name], key, timings)
            if key[0] != "dense":
                model = _replace(model, module, sparsify(module, *key))
        epilogues = choose_epilogues(model, args, repeats, warmup, timed=force is None)
        fused = choose_attention(model, args, min_speedup, repeats, warmup, timed=force is None) if attention else None
    plan = {"format": PLAN_FORMAT, "batch_size": size, "threads": used, "torch": torch.__version__,
            "device": str(device_of(model)), "min_speedup": min_speedup, "forced": force,
            "layers": {**structural, **entries}}
    if epilogues is not None:
        plan["epilogues"] = epilogues
    if fused is not None:
        plan["attention"] = fused
    return model, plan


def _remove_dead_products(model: nn.Module) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
    """Exact, timing-free rewrites: the second layer of a two-layer block whose weight is all zero becomes a
    :class:`ZeroLinear` (its output is its bias), and the first becomes a :class:`SkippedLinear`, since nothing it
    computes reaches the output. Returns the plan entries (a skipped layer names the zero layer it relies on)."""
    entries: dict[str, dict[str, Any]] = {}
    for first_name, second_name in list(two_layer_blocks(model)):
        first, second = model.get_submodule(first_name), model.get_submodule(second_name)
        assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)  # as _two_layer_blocks found them
        if torch.count_nonzero(second.weight):
            continue
        for name, child, rewritten in ((first_name, first, SkippedLinear(first)),
                                       (second_name, second, ZeroLinear(second))):
            entries[name] = _entry(child, weight_density(child), (rewritten.kernel, None), None)
            model = _replace(model, child, rewritten)
        entries[first_name]["relies_on"] = second_name
    return model, entries


def own_kernel_usable(module: nn.Module) -> bool:
    """Whether tsprune's pcsr kernel can run ``module``: a float32 CPU weight, and the kernel builds here (the first
    call compiles it; without a compiler it warns once and the engine keeps torch's kernels)."""
    weight = weight_of(module)
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and pcsr.available()


def _time_layer(module: nn.Module, calls: Sequence[Tensor], blocks: Sequence[int], layouts: Sequence[str],
                repeats: int, warmup: int) -> dict[Key, float]:
    candidates: dict[Key, nn.Module] = {("dense", None): module}
    if OWN_KERNEL in layouts and own_kernel_usable(module):
        candidates[(OWN_KERNEL, None)] = sparsify(module, OWN_KERNEL)
    if "csr" in layouts:
        candidates[("csr", None)] = sparsify(module, "csr")
    if "bsr" in layouts:
        candidates.update({("bsr", b): sparsify(module, "bsr", b) for b in _blocks(module, blocks)})
    return time_candidates(candidates, calls, repeats, warmup)


# ------------------------------------------------------------------------------------------------ plans


def plan_summary(plan: Mapping[str, Any]) -> dict[str, int]:
    """``sparse_layers`` (not left dense: CSR, BSR, zero or skipped) of ``candidate_layers`` (every pruned layer)."""
    layers = read_plan(plan)["layers"].values()
    return {"sparse_layers": sum(1 for layer in layers if layer["kernel"] != "dense"), "candidate_layers": len(layers)}


def read_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """``plan`` in the current format: checked, and with each layer's choice under ``kernel`` (plans of the first
    format called it ``engine``). Returns a new dict; ``plan`` is left as it is."""
    found = plan.get("format")
    if found != PLAN_FORMAT and found not in OLD_PLAN_FORMATS:
        raise TsPruneError(f"not a sparse plan (format {found!r}, expected {PLAN_FORMAT!r})")
    layers = {name: ({**{k: v for k, v in entry.items() if k != "engine"}, "kernel": entry["engine"]}
                     if "kernel" not in entry and "engine" in entry else dict(entry))
              for name, entry in plan["layers"].items()}
    return {**plan, "format": PLAN_FORMAT, "layers": layers}


def apply_plan(model: nn.Module, plan: Mapping[str, Any]) -> nn.Module:
    """Rebuild the sparse layers a plan chose on ``model`` (dense weights with zeros, e.g. a freshly loaded run),
    without timing. Layers already sparse are re-laid out only if the plan asks for another kernel or block."""
    plan = read_plan(plan)
    unfuse_epilogues(model)  # an already compiled model: its layers may be re-laid out, the plan folds them again
    for name, entry in plan["layers"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise TsPruneError(f"the sparse plan names layer {name!r}, which the model does not have") from None
        key = (entry["kernel"], entry.get("block"))
        if key[0] == "dense":
            continue
        if key[0] in STRUCTURAL:
            if not isinstance(module, (nn.Linear, ZeroLinear)) or list(weight_of(module).shape) != list(entry["shape"]):
                raise TsPruneError(f"layer {name!r} does not match the sparse plan ({entry['kind']} {entry['shape']})")
            try:
                checked = module if key[0] == "zero" else model.get_submodule(entry["relies_on"])
            except (KeyError, AttributeError):
                raise TsPruneError(f"the sparse plan skips layer {name!r} without a valid 'relies_on' layer") from None
            if torch.count_nonzero(weight_of(checked)):  # the rewrite is exact only while that layer is all zero
                raise TsPruneError(f"the sparse plan drops layer {name!r}, but the weights it relies on are not zero")
            if key[0] == "skip" and plan["layers"].get(entry["relies_on"], {}).get("kernel") != "zero":
                # a skipped layer outputs nothing (width 0): only a ZeroLinear may read it
                raise TsPruneError(f"the sparse plan skips layer {name!r} but does not plan {entry['relies_on']!r} "
                                   "as 'zero'")
            linear = densify(module) if isinstance(module, ZeroLinear) else module
            assert isinstance(linear, nn.Linear)  # checked above
            model = _replace(model, module, STRUCTURAL[key[0]](linear))
            continue
        if key[0] not in LAYOUTS:
            raise TsPruneError(f"the sparse plan asks for unknown kernel {key[0]!r} at {name!r}")
        if key[0] == OWN_KERNEL and not own_kernel_usable(module):  # e.g. loaded where it does not build
            key = ("csr", None)
        if isinstance(module, (SparseWeight, ZeroLinear)):
            if (module.kernel, module.block) == key:
                continue
            dense = densify(module)
            model, module = _replace(model, module, dense), dense
        if _kind(module) != entry.get("kind", _kind(module)) or list(weight_of(module).shape) != list(entry["shape"]):
            raise TsPruneError(f"layer {name!r} does not match the sparse plan ({entry['kind']} {entry['shape']})")
        try:
            model = _replace(model, module, sparsify(module, *key))
        except ValueError as exc:  # e.g. a BSR block that does not tile this layer
            raise TsPruneError(f"cannot apply the sparse plan at {name!r}: {exc}") from None
    folded = plan.get("epilogues") or {}
    if folded.get("kernel") == "fused":
        try:
            fuse_epilogues(model, folded["layers"])
        except AttributeError:
            raise TsPruneError("the sparse plan folds an activation into a layer the model does not have") from None
    fused = plan.get("attention") or {}
    if fused.get("kernel") == "fused" and attention_usable(model):  # else torch's path: the same function
        plain, done = fused_attention.fusable(model), fused_attention.fused(model)  # done: an already compiled model
        missing = [name for name in fused.get("modules", []) if name not in plain and name not in done]
        if missing:
            raise TsPruneError(f"the sparse plan fuses attention {missing[0]!r}, which the model does not have")
        fused_attention.fuse(model, [name for name in fused["modules"] if name in plain])
    return model


def dense_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict with every weight dense (zeros included) under the original model's keys.

    Sparse layers already save this way; this detaches, and guarantees no sparse layout reaches safetensors.
    """
    state = {name: value.detach() for name, value in model.state_dict().items()}
    bad = [name for name, value in state.items() if value.layout != torch.strided]
    if bad:
        raise TsPruneError(f"state dict entries are not dense: {', '.join(bad)}")
    return state


def densify_model(model: nn.Module) -> nn.Module:
    """Replace every sparse layer by its dense ``Linear``/``Conv1d`` and fused attention by torch's (zeros kept),
    in place; undoes compilation
    (e.g. before structured pruning or FLOP counting, which know only the dense layers)."""
    unfuse_epilogues(model)
    for module in [m for m in model.modules() if isinstance(m, (SparseWeight, ZeroLinear))]:
        model = _replace(model, module, densify(module))
    fused_attention.unfuse(model)
    return model
