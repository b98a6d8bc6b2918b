"""Checkpoints on disk: the layout, the collective atomic save, pruning, what resume reads first, and
reading their files as data only (:mod:`.safe_loading`).

A checkpoint directory ``OUTPUT/checkpoints/step_<N>/`` holds what ``accelerate.save_state`` writes
(model, optimizer and RNG states; with DeepSpeed its engine checkpoint under ``pytorch_model/``) plus
what each stateful part of the run writes for itself (vlp.train.checkpointer):

    trainer_state.json      step, skipped steps, world size, batch size, max steps
    loader.json             the position in the global data order (resume on any job shape)
    teacher.safetensors     the EMA teacher (tgc, distill)
    proto_rank<R>.pt        ProtoCLIP's current episode, per rank
    config.yaml             the run configuration
    open_clip_config.json   the architecture and preprocessing, for export

    manifest.json           every other file's size and BLAKE2b digest, written last

It is built as ``step_<N>.partial``; once every rank has finished, the main process writes the
manifest, fsyncs every file and folder, renames the folder to ``step_<N>`` and fsyncs its parent, so a
directory named ``step_<N>`` is complete even after a power loss. A file that rots or is cut later is
caught by :func:`verify_checkpoint` (resume, pruning, export), and resume falls back to the newest
checkpoint that verifies.

A save that fails (a full disk, any I/O error) on any rank removes the partial folder and raises
:class:`CheckpointWriteError` saying what was needed and where; the rank exits, and the launcher or the
collective timeout ends the others (vlp.train.watchdog).
"""

from .disk import (
    MANIFEST,
    SPACE_MARGIN,
    SPACE_SLACK_BYTES,
    TRAINER_STATE,
    CheckpointWriteError,
    DamagedCheckpoint,
    check_free_space,
    checkpoint_bytes,
    checkpoint_problem,
    checkpoint_root,
    file_digest,
    fsync_path,
    latest_checkpoint,
    latest_good_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    read_manifest,
    read_trainer_state,
    save_checkpoint,
    space_needed,
    verify_checkpoint,
    write_manifest,
)
from .safe_loading import (
    DS_TAG,
    FORCE_NO_WEIGHTS_ONLY,
    FORCE_WEIGHTS_ONLY,
    UnsafeCheckpointError,
    checkpoint_state_dict,
    deepspeed_safe_globals,
    refusal_error,
    weights_only_loads,
)

__all__ = [
    "FORCE_NO_WEIGHTS_ONLY",
    "FORCE_WEIGHTS_ONLY",
    "MANIFEST",
    "SPACE_MARGIN",
    "SPACE_SLACK_BYTES",
    "TRAINER_STATE",
    "CheckpointWriteError",
    "DS_TAG",
    "DamagedCheckpoint",
    "UnsafeCheckpointError",
    "check_free_space",
    "checkpoint_bytes",
    "checkpoint_problem",
    "checkpoint_root",
    "checkpoint_state_dict",
    "deepspeed_safe_globals",
    "file_digest",
    "fsync_path",
    "latest_checkpoint",
    "latest_good_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "read_manifest",
    "read_trainer_state",
    "refusal_error",
    "save_checkpoint",
    "space_needed",
    "verify_checkpoint",
    "weights_only_loads",
    "write_manifest",
]
