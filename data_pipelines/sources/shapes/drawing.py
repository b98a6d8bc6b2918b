"""How the shapes world is drawn: object sizes, placement margins, outline, background, anti-aliasing, noise.

A :class:`Drawing` changes pixels and positions only, never what a scene means (its colours, shapes,
sizes as words, relation, captions and exactly-false negatives). ``DEFAULT_DRAWING`` is the world's own
drawing (every training sample uses it, byte for byte as before drawings existed); ``ALT_DRAWING`` is
a second drawing that no training sample uses, for probes that ask whether what a model learned (a
spatial relation above all) survives a renderer it never saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Drawing:
    name: str
    # Side of an object's bounding square as a fraction of the image side: (small, large).
    sizes: tuple[float, float] = (0.25, 0.4)
    # Objects keep image_size // margin_div pixels (at least 1) off the border, and a pair keeps
    # image_size // gap_div pixels (at least 2) between its boxes along the relation's axis.
    margin_div: int = 32
    gap_div: int = 16
    supersample: int = 4  # drawn this many times larger, then box-filtered down; 1: no anti-aliasing
    outline_px: int = 0  # outline width in output pixels, in a darker shade of the fill; 0: none
    outline_shade: float = 0.45  # outline colour = fill colour x this
    background: tuple[int, int] = (200, 240)  # grey level of the background (top row), drawn uniformly
    background_tint: int = 8  # each channel is off the grey by up to this much
    gradient: int = 0  # the bottom row is this many levels brighter than the top (0: a flat background)
    colour_jitter: int = 15  # each channel of an object's colour is off by up to this much
    noise: float = 4.0  # std of the Gaussian pixel noise

    def side(self, size: str, image_size: int) -> int:
        """Side in pixels of a ``"small"`` or ``"large"`` object."""
        fraction = self.sizes[("small", "large").index(size)]
        return max(4, round(fraction * image_size))

    def margin(self, image_size: int) -> int:
        return max(1, image_size // self.margin_div)

    def gap(self, image_size: int) -> int:
        return max(2, image_size // self.gap_div)

    def check(self, image_size: int) -> None:
        """Raise ValueError unless every scene can be placed at ``image_size``.

        Placement needs two large objects side by side within the margins and gap, and a large object
        at most 3 small sides (+ 2 gaps) across, so that its vertical offset range is never empty.
        """
        small, large = self.side("small", image_size), self.side("large", image_size)
        room = image_size - 2 * self.margin(image_size) - self.gap(image_size) - 2 * large
        if room < 0 or large > 3 * small + 2 * self.gap(image_size) or small > large:
            raise ValueError(
                f"drawing {self.name!r} cannot place two large objects side by side at {image_size} px; "
                "choose another --image-size"
            )

    def to_json(self) -> dict:
        """The parameters as JSON reads them back (lists, not tuples), so a manifest compares equal."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


DEFAULT_DRAWING = Drawing(name="default")

# Every parameter differs from the default's: smaller objects (a large one is 0.36 of the side, a small
# one 0.19, so "small" and "large" still read as such), wider margins and gaps (objects sit elsewhere),
# a 1 px darker outline, hard aliased edges, a vertical grey gradient darker than the default's background
# (mid grey at the top to light grey at the bottom), and twice the noise. Colours stay the world's.
ALT_DRAWING = Drawing(
    name="alt",
    sizes=(0.19, 0.36),
    margin_div=12,
    gap_div=10,
    supersample=1,
    outline_px=1,
    outline_shade=0.45,
    background=(140, 170),
    background_tint=6,
    gradient=55,
    colour_jitter=15,
    noise=8.0,
)

DRAWINGS: dict[str, Drawing] = {"default": DEFAULT_DRAWING, "alt": ALT_DRAWING}


def get_drawing(name: str) -> Drawing:
    """The registered drawing called ``name``; ValueError naming the known ones otherwise."""
    try:
        return DRAWINGS[name]
    except KeyError:
        raise ValueError(f"unknown drawing {name!r}; known: {', '.join(DRAWINGS)}") from None
