"""The streaming loader: webdataset shards to batches of preprocessed images and tokenised captions.

Two modes:

* ``split``: every epoch the shard list is shuffled with ``(seed, epoch)``, dealt to ranks and then to
  workers (:func:`~data_pipelines.loader.plan.shard_plan`, a pure function of the shards, seed, epoch,
  world size and worker count), so each sample is read exactly once per epoch across the whole job
  (see :mod:`.plan` for what the last partial batches and uneven shards do to that). It needs at least
  ``world_size x max(1, workers)`` shards, one per reader; with fewer the loader refuses to start;
* ``resampled``: every worker draws shards with replacement (a source is picked by its weight, then a
  shard uniformly within it), for weighted mixtures and endless streams; an epoch is then a nominal
  ``epoch_samples`` samples.

Everything random is seeded from ``(seed, epoch, rank, worker)`` (the sample shuffle) or from the
sample itself (augmentation, caption and negative choice), so runs are reproducible.

Options: ``negative_sampling`` (``random`` K of a sample's negatives per epoch, or the ``fixed`` first
K), and ``neighbours``: each sample's hard-negative image (a ``neighbour.<ext>`` member and the JSON
``neighbour`` object: ``{"key", "caption", "negatives"}``, written by the shapes world's twins or by
``vlp-data neighbours``) comes in the same batch row.

Exact mid-epoch resume: each worker numbers the raw samples leaving its shuffle buffer; every batch
carries that position. :meth:`StreamingLoader.state_dict` records, per worker, the position of the
last batch the caller received, and which worker serves next. On resume each worker replays its
(deterministic) raw stream and drops the consumed prefix without decoding it, and worker ids are
rotated so the DataLoader's round-robin continues where it stopped.
"""

from .decode import NEGATIVE_SAMPLING
from .jpeg import DECODERS
from .loader import StreamingLoader
from .plan import shard_plan, split_shortfall
from .stream import MODES, DataPipelineError

__all__ = [
    "DECODERS",
    "MODES",
    "NEGATIVE_SAMPLING",
    "DataPipelineError",
    "StreamingLoader",
    "shard_plan",
    "split_shortfall",
]
