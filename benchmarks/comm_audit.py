"""Counts the bytes every ``torch.distributed`` collective moves, per rank per optimizer step, split by
collective kind and by owner; installed through the trainer's hook seam (benchmarks/comm_bytes.py runs it):

    PYTHONPATH=. VLP_TRAIN_HOOKS=benchmarks.comm_audit:CommAudit VLP_AUDIT_OUT=DIR accelerate launch -m vlp.train ...

Every collective function of ``torch.distributed`` is wrapped, and so are the two that DeepSpeed's
communication backend bound before the hooks were loaded (``cdb.all_gather_function``,
``cdb.reduce_scatter_function``: DeepSpeed's all-gather of parameters goes through them). A second
wrapper on the process group's own methods (``ProcessGroup.allreduce`` ...) sees every collective that
reaches gloo; those that did not pass a function-level wrapper are reported as ``unseen`` (it should
stay empty: then the table below is complete).

Bytes per call (numel x element size): ``in_bytes`` is the tensor a rank contributes (all_reduce,
reduce, broadcast: the tensor; all_gather / all_gather_into_tensor: the rank's input, ``out_bytes`` the
gathered output; reduce_scatter / all_to_all: the whole input list or tensor). ``sent_bytes`` converts
it to the bytes one rank sends in a bandwidth-optimal ring of N ranks: all_reduce 2(N-1)/N x in;
all_gather (N-1) x in (= (N-1)/N x out); reduce_scatter, all_to_all, reduce, broadcast (N-1)/N x in
(for reduce and broadcast: the average over ranks of a pipelined chain); send: in.

Owner, from the Python stack at the call (innermost frame first):

- ``loss``: the autograd collectives of torch.distributed.nn (the loss's feature gathers with gradient:
  all_gather forward, its backward all_to_all / reduce_scatter, which runs inside the engine's
  backward), or any call inside vlp/objectives;
- ``engine``: inside the engine's backward, step or forward (DeepSpeed's gradient reduce, its parameter
  gathers, its overflow / clipping norms): tests/sync_audit.py's ENGINE frames;
- ``data``: inside data_pipelines; ``trainer``: anything else under vlp/;
- ``engine`` also when none of the above is on the stack but DeepSpeed is: a gradient hook that the
  autograd engine runs on its own thread (CUDA tensors), whose stack holds no caller;
- ``other``: none of these.

Each call is also charged by tests/sync_audit.py's own rule (which looks for engine frames first);
where the two disagree the bytes are listed under ``owner_disagreements``.

An event belongs to the step whose loss hook ran last (step s: from its loss, after its forward, to the
next step's loss), as in tests/sync_audit.py. Each rank writes ``DIR/rank<R>.json`` at exit.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist

from tests.sync_audit import COLLECTIVES, ENGINE
from tests.sync_audit import _owner as sync_audit_owner
from vlp.train.fault_seams import TrainHooks

FUNCTIONS = (
    *COLLECTIVES,
    "all_reduce_coalesced",
    "all_gather_coalesced",
    "_all_gather_base",
    "_reduce_scatter_base",
    "all_to_all",
    "isend",
    "irecv",
)
# The process group's methods (what every function above ends in), for the completeness check.
PG_METHODS = (
    "allreduce",
    "allreduce_coalesced",
    "allgather",
    "_allgather_base",
    "allgather_coalesced",
    "allgather_into_tensor_coalesced",
    "reduce",
    "reduce_scatter",
    "_reduce_scatter_base",
    "reduce_scatter_tensor_coalesced",
    "alltoall",
    "alltoall_base",
    "broadcast",
    "gather",
    "scatter",
    "send",
    "recv",
)
AUTOGRAD_COLLECTIVES = "torch/distributed/nn/functional.py"


def _nbytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(t) for t in x)
    return 0


def _dtype(x) -> str:
    if isinstance(x, torch.Tensor):
        return str(x.dtype).replace("torch.", "")
    if isinstance(x, (list, tuple)) and x:
        return _dtype(x[0])
    return "-"


def _arg(args, kwargs, index: int, *names: str):
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return args[index] if len(args) > index else None


def sizes(kind: str, args, kwargs) -> tuple[object, object]:
    """(what this rank puts in, what it gets out) of a call to torch.distributed.<kind>."""
    if kind in ("all_gather", "all_gather_coalesced"):
        return _arg(args, kwargs, 1, "tensor", "input_tensor_list"), _arg(
            args, kwargs, 0, "tensor_list", "output_tensor_lists"
        )
    if kind in ("all_gather_into_tensor", "_all_gather_base"):
        return _arg(args, kwargs, 1, "input_tensor"), _arg(args, kwargs, 0, "output_tensor")
    if kind in ("reduce_scatter", "reduce_scatter_tensor", "_reduce_scatter_base", "all_to_all", "all_to_all_single"):
        return _arg(args, kwargs, 1, "input_list", "input", "input_tensor_list"), _arg(
            args, kwargs, 0, "output", "output_tensor_list"
        )
    if kind in ("all_reduce_coalesced",):
        return _arg(args, kwargs, 0, "tensors"), None
    if kind in ("gather",):
        return _arg(args, kwargs, 0, "tensor"), _arg(args, kwargs, 1, "gather_list")
    if kind in ("scatter",):
        return _arg(args, kwargs, 1, "scatter_list"), _arg(args, kwargs, 0, "tensor")
    if kind in ("barrier", "monitored_barrier") or kind.endswith("_object") or kind.endswith("_object_list"):
        return None, None  # no tensor (the object collectives' pickles are not counted)
    return _arg(args, kwargs, 0, "tensor"), None  # all_reduce, reduce, broadcast, send, recv, isend, irecv


def sent(kind: str, in_bytes: int, n: int) -> float:
    """Bytes one rank sends for a call in a bandwidth-optimal ring of n ranks (see the module's doc)."""
    if n <= 1:
        return 0.0
    if kind in ("all_reduce", "all_reduce_coalesced"):
        return 2 * (n - 1) / n * in_bytes
    if kind in ("all_gather", "all_gather_into_tensor", "_all_gather_base", "all_gather_coalesced"):
        return (n - 1) * in_bytes
    if kind in ("send", "isend"):
        return float(in_bytes)
    if kind in ("recv", "irecv"):
        return 0.0
    return (n - 1) / n * in_bytes


def owner(frame) -> str:
    """Who asked for the collective whose caller is ``frame`` (the module's doc)."""
    ours = deepspeed = False
    while frame is not None:
        path = frame.f_code.co_filename.replace(os.sep, "/")
        name = frame.f_code.co_name
        if AUTOGRAD_COLLECTIVES in path or "/vlp/objectives/" in path:
            return "loss"
        if any(fragment in path and name == fn for fragment, fn in ENGINE):
            return "engine"
        if "/data_pipelines/" in path:
            return "data"
        if "/vlp/" in path and "/tests/" not in path and "/benchmarks/" not in path:
            ours = True
        deepspeed = deepspeed or "/deepspeed/" in path
        frame = frame.f_back
    return "trainer" if ours else "engine" if deepspeed else "other"


class CommAudit(TrainHooks):
    def __init__(self):
        self.out = Path(os.environ["VLP_AUDIT_OUT"])
        self.step = 0
        # step -> (owner, kind, dtype) -> [calls, in_bytes, out_bytes, sent_bytes]
        self.counts: dict[int, dict[tuple, list]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0.0]))
        self.disagree: dict[tuple, list] = defaultdict(lambda: [0, 0])  # (ours, sync_audit's) -> [calls, bytes]
        self.unseen: dict[str, list] = defaultdict(lambda: [0, 0])  # process-group method -> [calls, bytes]
        self._local = threading.local()  # depth of wrapped calls, per thread (autograd's own threads)
        for name in FUNCTIONS:
            for module in (dist, dist.distributed_c10d):
                if hasattr(module, name):
                    setattr(module, name, self._wrap(getattr(module, name), name))
        self._rebind_deepspeed()
        pg = torch._C._distributed_c10d.ProcessGroup
        for name in PG_METHODS:
            if hasattr(pg, name):
                setattr(pg, name, self._watch(getattr(pg, name), name))
        atexit.register(self._write)

    def _rebind_deepspeed(self) -> None:
        """DeepSpeed's backend keeps torch's all-gather and reduce-scatter functions from its start
        (before the hooks): point them at the wrapped ones."""
        ds_comm = sys.modules.get("deepspeed.comm.comm")
        cdb = getattr(ds_comm, "cdb", None)
        if cdb is None:
            return
        for attr, name in (
            ("all_gather_function", "all_gather_into_tensor"),
            ("reduce_scatter_function", "reduce_scatter_tensor"),
        ):
            if getattr(cdb, attr, None) is not None and hasattr(dist, name):
                setattr(cdb, attr, getattr(dist, name))

    def _wrap(self, fn, kind: str):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            depth = getattr(self._local, "depth", 0)
            if depth:  # count the outermost call only (all_gather_coalesced -> all_gather_into_tensor)
                return fn(*args, **kwargs)
            caller = sys._getframe(1)
            inp, out = sizes(kind, args, kwargs)
            group = kwargs.get("group")
            n = dist.get_world_size(group) if dist.is_initialized() else 1
            in_bytes, out_bytes = _nbytes(inp), _nbytes(out)
            who = owner(caller)
            entry = self.counts[self.step][(who, kind, _dtype(inp))]
            entry[0] += 1
            entry[1] += in_bytes
            entry[2] += out_bytes
            entry[3] += sent(kind, in_bytes, n)
            theirs = sync_audit_owner(caller) or "other"
            if theirs != who:
                d = self.disagree[(who, theirs, kind)]
                d[0] += 1
                d[1] += in_bytes
            self._local.depth = 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.depth = 0

        return counted

    def _watch(self, method, name: str):
        @functools.wraps(method)
        def watched(pg, *args, **kwargs):
            if not getattr(self._local, "depth", 0):
                u = self.unseen[name]
                u[0] += 1
                u[1] += _nbytes(args[0]) if args else 0
            return method(pg, *args, **kwargs)

        return watched

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        self.step = step
        return loss

    def _write(self) -> None:
        rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
        world = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
        self.out.mkdir(parents=True, exist_ok=True)
        fields = ("calls", "in_bytes", "out_bytes", "sent_bytes")
        state = {
            "rank": rank,
            "world_size": world,
            "steps": {
                str(s): [
                    {"owner": o, "kind": k, "dtype": t, **dict(zip(fields, v, strict=True))}
                    for (o, k, t), v in sorted(c.items())
                ]
                for s, c in sorted(self.counts.items())
            },
            "owner_disagreements": [
                {"ours": o, "sync_audit": t, "kind": k, "calls": v[0], "in_bytes": v[1]}
                for (o, t, k), v in sorted(self.disagree.items())
            ],
            "unseen": {k: {"calls": v[0], "bytes": v[1]} for k, v in sorted(self.unseen.items())},
        }
        (self.out / f"rank{rank}.json").write_text(json.dumps(state, indent=1))
