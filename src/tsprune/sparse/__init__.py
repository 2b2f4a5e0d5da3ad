"""tsprune's sparse engine: pruned layers swapped for sparse kernels where, and only where, they are faster.

``engine`` compiles a masked model (times every pruned layer's kernels, keeps the fastest, returns the plan) and
replays a saved plan; ``timing`` captures each layer's inputs and times candidates in alternation; ``layers`` holds
the sparse modules; ``kernel`` is tsprune's own C++ kernel (pcsr), built on first use; ``attention`` its fused short
attention (Crossformer's attention over a few keys in one op). Below ``prune``: loading a compiled run needs no
pruning code.
"""
