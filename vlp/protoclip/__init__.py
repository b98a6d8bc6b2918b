"""ProtoCLIP (Chen et al.) in one place: the projection heads (:mod:`.heads`), K-means over all ranks
and back translation (:mod:`.kmeans`), the episode that clusters, labels and is checkpointed
(:mod:`.episode`), the prototypical loss and its registered terms (:mod:`.loss`), and the optional
external sentence teacher (:mod:`.teacher`)."""

from . import loss as _terms  # noqa: F401 - registers proto and proto_external with vlp.objectives
