"""The trainer (an application of the vlp library), one file per question:

cli.py          the command line and its exit codes                 (vlp-train, -m vlp.train)
setup.py        building a run: refusals, model, loader, checkpointer build_run -> Run
resume.py       which checkpoint; what a resume keeps and may change resolve_resume
data.py         the shards, the stream options, the loader          stream_options
engine.py       every DeepSpeed / DDP / precision difference        Engine
step.py         features and the (accumulated) step                 Stepper
loop.py         the loop, top to bottom                             train(run)
agreement.py    what the ranks agree on, read once per log step     Agreement
checkpointer.py the run's stateful parts and the checkpointer       Checkpointer
reshard.py      ZeRO state saved by N ranks, loaded by M            to_universal
stopping.py     a stop signal, the non-finite guard                 StopSignal, NonFiniteGuard
watchdog.py     collective timeouts, heartbeats, who stopped        Heartbeat
throughput.py   is the run data-bound?                              DataBoundWatch
evaluation.py   zero-shot evaluation during training
finish.py       export and summary at the end
fault_seams.py  where tests inject faults and pacing                TrainHooks
errors.py       exit codes, TrainingError

The library (vlp.model, vlp.objectives, vlp.protoclip, vlp.collectives, vlp.checkpoint, ...) never
imports this package (tests/test_layers.py).
"""

from .cli import main

__all__ = ["main"]
