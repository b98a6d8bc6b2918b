"""Seeded, budget-matched studies: recipes × seeds × one varied setting, each cell a normal training run
and an evaluation of its export, aggregated with intervals and paired tests (see ``vlp-study --help``)."""
