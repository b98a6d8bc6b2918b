"""The shapes world: a synthetic, compositional image-caption world.

Every scene holds one or two coloured shapes on a lightly noisy background; two-object scenes
carry a spatial relation. Because every caption is derived from a structured scene, the truth is
known exactly, which makes the world useful for three things at once:

* training data that needs no download (``train/``), each sample with its *twin*: an image that
  its caption is exactly false of, carried as the sample's hard-negative neighbour,
* a zero-shot classification set in CLIP_benchmark's ``wds`` layout (``zeroshot/``), with a split
  of (colour, shape) combinations that never appear in training (``heldout``),
* SugarCrepe-format compositional probes whose negatives are exactly false (``compositional/``).

Every sample is drawn from its own generator seeded by ``(seed, split, index)``, so output does not
depend on worker count or order, and the same arguments give byte-identical files.

Modules: :mod:`.scene` (objects, sampling, placement), :mod:`.drawing` (drawing styles: the world's
default and ``alt``), :mod:`.render` (drawing), :mod:`.captions` (captions, exact negatives),
:mod:`.twins` (twin scenes), :mod:`.samples` (one sample of each split), :mod:`.world` (the files),
:mod:`.probes` (the probes alone, in another drawing).
"""

from .drawing import ALT_DRAWING, DEFAULT_DRAWING, DRAWINGS, Drawing
from .probes import ProbesConfig, generate_probes
from .scene import DEFAULT_HELDOUT, parse_heldout
from .world import WorldConfig, WorldSummary, generate_world

__all__ = [
    "ALT_DRAWING",
    "DEFAULT_DRAWING",
    "DEFAULT_HELDOUT",
    "DRAWINGS",
    "Drawing",
    "ProbesConfig",
    "WorldConfig",
    "WorldSummary",
    "generate_probes",
    "generate_world",
    "parse_heldout",
]
