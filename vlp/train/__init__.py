"""The trainer, one file per question:

cli.py          the command line and its exit codes            (vlp-train, -m vlp.train)
setup.py        building a run: resume, refusals, components   build_run -> Run
backend.py      every DeepSpeed / DDP / precision difference    Backend
step.py         features and the (accumulated) step            Stepper
loop.py         the loop, top to bottom                        train(run)
state.py        stateful parts and the checkpointer            Checkpointer
stopping.py     a stop signal, the non-finite guard
evaluation.py   zero-shot evaluation during training
finish.py       export and summary at the end
hooks.py        test seams (fault injection)
errors.py       exit codes, TrainingError
"""

from .cli import main

__all__ = ["main"]
