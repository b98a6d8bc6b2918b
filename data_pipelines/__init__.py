"""Data for vision-language pretraining: the shapes world, shard writing and the streaming loader.

This package serves any trainer; it never imports ``vlp``.
"""
