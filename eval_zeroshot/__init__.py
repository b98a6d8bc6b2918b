"""Evaluators for any open_clip model: zero-shot classification and retrieval, compositional benchmarks.

This package never imports ``vlp``.
"""
