"""Data for vision-language pretraining, any trainer's; this package never imports ``vlp``.

In the order data flows: :mod:`.sources` (a user's table, the synthetic shapes world) are written
as :mod:`.shards` (specs, reading, atomic writing, stats), optionally rewritten with hard
:mod:`.negatives` (captions) and :mod:`.neighbours` (hard-negative images, embedded with an open_clip
model from :mod:`.models`), and streamed to a trainer by the :mod:`.loader`. ``vlp-data`` is
:mod:`.cli` (with :mod:`.cli_neighbours`).
"""
