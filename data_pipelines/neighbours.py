"""Hard-negative images for any shards (NegCLIP's neighbours): each sample gets its nearest other image.

Every image is embedded with an open_clip image tower (its eval transform); each sample's neighbour is
the most cosine-similar image that is neither the sample itself nor byte-identical to its image, and
that has a caption. The shards are rewritten with a ``neighbour.<ext>`` member (the neighbour's image
bytes) and a JSON ``neighbour`` object ``{"key", "caption", "negatives"}``: the format the shapes
world's twins use and the loader's ``neighbours=True`` reads.

Nothing is lost: every sample is written back, every member other than ``.json`` (and a previous
``neighbour.*``) byte for byte; a sample whose image or JSON cannot be read keeps its members and gets
no neighbour, and so does one for which no other captioned, distinct image exists (it is written back
as it was). The output is built beside ``out`` and renamed into place. The search is brute force,
O(N²) in time (in row chunks, so memory stays O(N)); image bytes wait in a temporary file, not memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlp.common.atomic import staged, write_json_atomic
from vlp.common.models import image_encoder

from .loader.decode import NEIGHBOUR_PREFIX
from .shards.reader import BAD_JSON, SkipCounter, SkipSample, caption, decode_image, image_member, iter_shard
from .shards.specs import rewrite_plan
from .shards.writer import ShardSink


class _Recount(SkipCounter):
    """The second pass meets the same problems as the first, already counted and logged."""

    def add(self, reason: str, detail: str = "") -> None:
        pass


@dataclass
class _Entry:
    key: str
    caption: str | None = None  # None: cannot be anyone's neighbour
    negatives: list = field(default_factory=list)
    ext: str = ""
    offset: int = 0
    length: int = 0
    row: int = -1  # row of its features; -1: no usable image (or JSON), gets no neighbour


@dataclass
class NeighbourSummary:
    shards: int = 0
    samples: int = 0
    with_neighbour: int = 0
    without_neighbour: int = 0  # no usable image or JSON, or no other captioned, distinct image
    mean_similarity: float | None = None
    min_similarity: float | None = None
    skipped: dict = field(default_factory=dict)
    seconds: float = 0.0


def nearest(
    features: torch.Tensor, groups: torch.Tensor, candidate: torch.Tensor, chunk_elements: int = 1 << 24
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of the unit-norm ``features`` (N×D), the index of the most similar row of another
    ``groups`` id among the ``candidate`` rows, and that cosine similarity (index -1 where none)."""
    n = features.shape[0]
    index = torch.full((n,), -1, dtype=torch.long)
    best = torch.full((n,), float("nan"))
    chunk = max(1, chunk_elements // max(1, n))
    for start in range(0, n, chunk):
        sims = features[start : start + chunk] @ features.T
        excluded = (groups[start : start + chunk, None] == groups[None, :]) | ~candidate[None, :]
        sims.masked_fill_(excluded, float("-inf"))
        value, arg = sims.max(dim=1)
        found = torch.isfinite(value)
        index[start : start + chunk] = torch.where(found, arg, -1).cpu()
        best[start : start + chunk] = torch.where(found, value, float("nan")).float().cpu()
    return index, best


def _embed_all(
    urls: list[str], encode: Callable[[list], torch.Tensor], blobs, counter: SkipCounter, batch_size: int
) -> tuple[list[list[_Entry]], torch.Tensor, list[str]]:
    """Pass 1: every sample's entry (per shard), the features of its image, and the image digests."""
    entries: list[list[_Entry]] = []
    features: list[torch.Tensor] = []
    digests: list[str] = []
    pending: list = []
    for url in urls:
        shard: list[_Entry] = []
        for sample in iter_shard(url, counter):
            entry = _Entry(sample["__key__"])
            shard.append(entry)
            try:
                meta = json.loads(sample["json"]) if "json" in sample else {}
            except ValueError:
                meta = None
            if not isinstance(meta, dict):  # kept byte for byte, without a neighbour
                counter.add(BAD_JSON, f"{entry.key} in {url}")
                continue
            try:
                image = decode_image(sample)
            except SkipSample as skip:
                counter.add(skip.reason, skip.detail)
                continue
            try:
                entry.caption = caption(sample, meta)
            except SkipSample:
                entry.caption = None  # it still gets a neighbour; it cannot be one
            negs = meta.get("negatives")
            entry.negatives = negs if isinstance(negs, list) else []
            entry.ext, data = image_member(sample)
            entry.offset, entry.length = blobs.tell(), len(data)
            blobs.write(data)
            entry.row = len(digests)
            digests.append(hashlib.sha256(data).hexdigest())
            pending.append(image)
            if len(pending) == batch_size:
                features.append(encode(pending))
                pending = []
        entries.append(shard)
    if pending:
        features.append(encode(pending))
    return entries, torch.cat(features) if features else torch.zeros(0, 1), digests


def _rewrite_shard(url: str, name: str, shard: list[_Entry], out_dir: Path, pick, summary: NeighbourSummary) -> None:
    """Pass 2: the shard's samples again, in the same order, each with its neighbour (``pick(entry)``:
    (ext, image bytes, JSON object) or None). One sink per input shard keeps the shard's name."""
    changed = f"{url} read differently the second time; neighbours need shards that stay put"
    sink = ShardSink(out_dir, pattern=name, shard_size=10**12)
    n = 0
    for sample in iter_shard(url, _Recount()):
        if n >= len(shard) or sample["__key__"] != shard[n].key:
            raise ValueError(changed)
        members = {k: v for k, v in sample.items() if not k.startswith("__")}
        chosen = pick(shard[n])
        n += 1
        if chosen is None:
            summary.without_neighbour += 1
        else:
            ext, data, record = chosen
            members = {k: v for k, v in members.items() if not k.startswith(NEIGHBOUR_PREFIX)}
            members[NEIGHBOUR_PREFIX + ext] = data
            meta = json.loads(sample["json"]) if "json" in sample else {}
            members["json"] = json.dumps({**meta, "neighbour": record}, ensure_ascii=False).encode()
            summary.with_neighbour += 1
        sink.write(sample["__key__"], members)
    sink.close(sizes_file=None)
    if n != len(shard):
        raise ValueError(changed)


def add_neighbours(
    spec: str,
    out: str | os.PathLike,
    model: str,
    pretrained: str = "",
    batch_size: int = 64,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> NeighbourSummary:
    """Write every shard of ``spec`` to ``out`` with each sample's nearest-neighbour image added."""
    start = time.perf_counter()
    urls, names, out = rewrite_plan(spec, out, "find neighbours")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    net, preprocess = image_encoder(model, pretrained, device)

    @torch.inference_mode()
    def encode(images: list) -> torch.Tensor:
        pixels = torch.stack([preprocess(im) for im in images]).to(device)
        return torch.nn.functional.normalize(net.encode_image(pixels).float(), dim=-1)

    counter = SkipCounter()
    summary = NeighbourSummary(shards=len(urls))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}.images-") as blobs:
        entries, features, digests = _embed_all(urls, encode, blobs, counter, batch_size)
        if progress:
            progress(f"embedded {len(digests)} images; searching neighbours (brute force, O(N^2))")
        rows = [e for shard in entries for e in shard if e.row >= 0]
        group_of = {d: i for i, d in enumerate(dict.fromkeys(digests))}  # byte-identical images: one group
        groups = torch.tensor([group_of[d] for d in digests], dtype=torch.long, device=features.device)
        candidate = torch.tensor([e.caption is not None for e in rows], dtype=torch.bool, device=features.device)
        index, sims = nearest(features, groups, candidate)

        def pick(entry: _Entry) -> tuple[str, bytes, dict] | None:
            if entry.row < 0 or index[entry.row] < 0:
                return None
            nb = rows[int(index[entry.row])]
            blobs.seek(nb.offset)
            return nb.ext, blobs.read(nb.length), {"key": nb.key, "caption": nb.caption, "negatives": nb.negatives}

        with staged(out) as tmp:
            for url, name, shard in zip(urls, names, entries, strict=True):
                _rewrite_shard(url, name, shard, tmp, pick, summary)
                summary.samples += len(shard)
            sizes = {name: len(shard) for name, shard in zip(names, entries, strict=True) if shard}
            write_json_atomic(tmp / "sizes.json", sizes, sort_keys=True)
    found = sims[index >= 0]
    if len(found):
        summary.mean_similarity = round(float(found.mean()), 4)
        summary.min_similarity = round(float(found.min()), 4)
    summary.skipped = counter.as_dict()
    summary.seconds = round(time.perf_counter() - start, 2)
    return summary
