"""Torch-Pruning pruners for the modules a dependency trace cannot see through (``prune.structured`` hands them to
DepGraph): FEDformer's Fourier blocks, Crossformer's segment merging and PatchTST's flatten head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from tsprune.errors import TsPruneError
from tsprune.models.crossformer import SegmentMerging
from tsprune.models.layers.fourier import FourierBlock, FourierCrossAttention
from tsprune.models.patchtst import FlattenHead

def _keep(size: int, idxs: Sequence[int]) -> torch.Tensor:
    drop = set(int(i) for i in idxs)
    return torch.tensor([i for i in range(size) if i not in drop], dtype=torch.long)


def _per_head_keep(heads: int, head_dim: int, idxs: Sequence[int]) -> torch.Tensor:
    """Flat indices ``h * E + e`` to remove -> ``[heads, E']`` kept indices; every head must lose as many."""
    keep = _keep(heads * head_dim, idxs).view(-1)
    per_head = [keep[(keep // head_dim) == h] % head_dim for h in range(heads)]
    sizes = {len(k) for k in per_head}
    if len(sizes) != 1:
        raise TsPruneError(f"Fourier block pruned unevenly across heads ({sorted(sizes)} dims kept)")
    return torch.stack(per_head)


FourierLayer = FourierBlock | FourierCrossAttention


class FourierPruner(tp.pruner.BasePruningFunc):
    """Prunes the head dimensions of a Fourier block's complex weight ``[H, E_in, E_out, M]``.

    In-channels are the flattened ``H * E_in`` of its query (and key) input, out-channels the ``H * E_out`` its output
    projection reads; removal is per head with the same count in each head (the weight is one tensor per head).
    """

    def _prune(self, layer: FourierLayer, idxs: Sequence[int], dim: int) -> FourierLayer:
        weight = layer.weight.data
        heads, head_dim = weight.shape[0], weight.shape[dim]
        keep = _per_head_keep(heads, head_dim, idxs).to(weight.device)  # [H, E']
        view = [heads, 1, 1, 1]
        view[dim] = keep.shape[1]
        size = list(weight.shape)
        size[dim] = keep.shape[1]
        index = keep.view(view).expand(size)  # the kept dims of each head, broadcast over the other axes
        layer.weight = nn.Parameter(torch.gather(weight, dim, index))
        return layer

    def prune_in_channels(self, layer: FourierLayer, idxs: Sequence[int]) -> FourierLayer:
        return self._prune(layer, idxs, 1)

    def prune_out_channels(self, layer: FourierLayer, idxs: Sequence[int]) -> FourierLayer:
        return self._prune(layer, idxs, 2)

    def get_in_channels(self, layer: FourierLayer) -> int:
        return layer.weight.shape[0] * layer.weight.shape[1]

    def get_out_channels(self, layer: FourierLayer) -> int:
        return layer.weight.shape[0] * layer.weight.shape[2]


class SegmentMergingPruner(tp.pruner.BasePruningFunc):
    """Crossformer's segment merging: ``win_size`` copies of ``d_model`` enter its LayerNorm and Linear side by side."""

    def prune_in_channels(self, layer: SegmentMerging, idxs: Sequence[int]) -> SegmentMerging:
        d_model = layer.proj.in_features // layer.win_size
        keep = _keep(d_model, idxs)
        wide = torch.cat([keep + i * d_model for i in range(layer.win_size)]).to(layer.proj.weight.device)
        layer.proj.weight = nn.Parameter(layer.proj.weight.data[:, wide])
        layer.proj.in_features = len(wide)
        layer.norm.weight = nn.Parameter(layer.norm.weight.data[wide])
        layer.norm.bias = nn.Parameter(layer.norm.bias.data[wide])
        layer.norm.normalized_shape = (len(wide),)
        return layer

    def prune_out_channels(self, layer: SegmentMerging, idxs: Sequence[int]) -> SegmentMerging:
        keep = _keep(layer.proj.out_features, idxs).to(layer.proj.weight.device)
        layer.proj.weight = nn.Parameter(layer.proj.weight.data[keep])
        if layer.proj.bias is not None:
            layer.proj.bias = nn.Parameter(layer.proj.bias.data[keep])
        layer.proj.out_features = len(keep)
        return layer

    def get_in_channels(self, layer: SegmentMerging) -> int:
        return layer.proj.in_features // layer.win_size

    def get_out_channels(self, layer: SegmentMerging) -> int:
        return layer.proj.out_features


class FlattenHeadPruner(tp.pruner.BasePruningFunc):
    """PatchTST's flatten head: its Linear reads ``patches`` copies of each ``d_model`` channel, ``d_model``-major, so
    a removed channel ``c`` removes features ``c * patches + p`` for every patch ``p``. Its outputs are the forecast
    steps: never removed (the head is an output layer)."""

    def prune_in_channels(self, layer: FlattenHead, idxs: Sequence[int]) -> FlattenHead:
        patches = layer.patches
        keep = _keep(layer.linear.in_features // patches, idxs)
        wide = (keep[:, None] * patches + torch.arange(patches)).flatten().to(layer.linear.weight.device)
        layer.linear.weight = nn.Parameter(layer.linear.weight.data[:, wide])
        layer.linear.in_features = len(wide)
        return layer

    def prune_out_channels(self, layer: FlattenHead, idxs: Sequence[int]) -> FlattenHead:
        raise TsPruneError("the flatten head's outputs are forecast steps: they are never pruned")

    def get_in_channels(self, layer: FlattenHead) -> int:
        return layer.linear.in_features // layer.patches

    def get_out_channels(self, layer: FlattenHead) -> int:
        return layer.linear.out_features


CUSTOM_PRUNERS: dict[type, tp.pruner.BasePruningFunc] = {
    FourierBlock: FourierPruner(),
    FourierCrossAttention: FourierPruner(),
    SegmentMerging: SegmentMergingPruner(),
    FlattenHead: FlattenHeadPruner(),
}
