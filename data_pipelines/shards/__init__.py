"""Shards on disk: naming them (specs), reading samples out of them, writing them atomically, stats."""

from .specs import SpecError, parse_sources

__all__ = ["SpecError", "parse_sources"]
