"""Layers written once and shared by the five forecasters."""
