"""tsprune's sparse engine: pruned layers swapped for sparse kernels where, and only where, they are faster.

``engine`` compiles a masked model (times every pruned layer's kernels, keeps the fastest, returns the plan) and
replays a saved plan; ``layers`` holds the sparse modules. Below ``prune``: loading a compiled run needs no pruning
code.
"""
