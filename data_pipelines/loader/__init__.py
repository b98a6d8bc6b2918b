"""The streaming loader: webdataset shards to batches of preprocessed images and tokenised captions.

Two modes:

* ``split``: every sample once per epoch, in a global order that is a function of ``(seed, epoch)``
  alone (:mod:`.order`: the shards shuffled, their samples laid end to end and permuted within windows
  of ``shuffle_buffer`` samples);
* ``resampled``: draws with replacement (a source by its weight, then a shard and a sample uniformly
  within it), for weighted mixtures and endless streams; an epoch is then a nominal ``epoch_samples``.

A global batch is the next ``world_size x batch_size`` positions of the order, and rank ``r`` reads its
``batch_size`` of them, by offset, from the shards' sample indexes (:mod:`data_pipelines.shards.index`;
remote or compressed shards are copied into a local cache first, :mod:`data_pipelines.shards.cache`).
Augmentation, caption and negative choice are seeded from the sample itself, so batch ``i`` holds the
same samples, decoded the same way, whatever the number of ranks and DataLoader workers.

Options: ``negative_sampling`` (``random`` K of a sample's negatives per epoch, or the ``fixed`` first
K), and ``neighbours``: each sample's hard-negative image (a ``neighbour.<ext>`` member and the JSON
``neighbour`` object: ``{"key", "caption", "negatives"}``, written by the shapes world's twins or by
``vlp-data neighbours``) comes in the same batch row.

Exact mid-epoch resume: the position is one number, the samples of the epoch's order consumed;
:meth:`StreamingLoader.state_dict` saves it with what the order depends on (mode, seed, shuffle
window, the shard list), and a loader of any shape continues from it without reading the consumed
samples.
"""

from .jpeg import DECODERS
from .loader import StreamingLoader
from .options import NEGATIVE_SAMPLING, StreamOptions
from .order import EpochOrder
from .stream import MODES, DataPipelineError

__all__ = [
    "DECODERS",
    "MODES",
    "NEGATIVE_SAMPLING",
    "DataPipelineError",
    "EpochOrder",
    "StreamOptions",
    "StreamingLoader",
]
