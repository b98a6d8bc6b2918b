"""Where samples come from: a user's table of (image, caption) (:mod:`.ingest`) or the synthetic shapes world."""
