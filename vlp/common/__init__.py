"""What every package of the project may import, and which imports none of them: atomic writes
(:mod:`.atomic`), the command-line convention (:mod:`.cli`), open_clip model files (:mod:`.models`),
a confidence interval (:mod:`.intervals`) and table formatting (:mod:`.tables`).

The lowest layer: vlp.common <- data_pipelines <- eval_zeroshot <- vlp (tests/test_layers.py)."""
