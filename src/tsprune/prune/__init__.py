"""Pruning of trained forecasters: unstructured magnitude pruning (``unstructured``) and structured pruning."""
