"""The two scripts the GPU check writes into its work folder and runs in the trainers' processes:
open_clip's trainer, run as is with its loader timed and its peak memory read, and the hot loop's sync
audit, loaded by vlp's trainer as its hooks (``VLP_TRAIN_HOOKS``), which counts every synchronising CUDA
call per step and charges it to its caller. They are text, not imports: they run in other processes.
"""

# open_clip's trainer, run as is; the wrapper only times its loader and reads its peak memory.
OPEN_CLIP_PEER = r'''
import json, resource, sys, time
import open_clip, torch
arch, record_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if arch.endswith(".json"):
    open_clip.add_model_config(arch)  # open_clip's trainer only knows registered model names
import open_clip_train.main as main_module

waits = []

class TimedLoader:
    """open_clip's DataLoader, timing each next(): the wait vlp logs as data_time."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self):
        return len(self._loader)

    def __iter__(self):
        it = iter(self._loader)
        while True:
            tic = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            waits.append(time.perf_counter() - tic)
            yield batch

get_data = main_module.get_data

def timed_get_data(*args, **kwargs):
    data = get_data(*args, **kwargs)
    if "train" in data:
        data["train"].dataloader = TimedLoader(data["train"].dataloader)
    return data

main_module.get_data = timed_get_data
try:
    main_module.main(argv)
finally:
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(record_path, "w") as f:
        json.dump({"loader_wait_s": waits, "peak_memory_mb": peak}, f)
'''
# The hot loop's sync audit, loaded by the trainer through VLP_TRAIN_HOOKS (vlp/train/fault_seams.py).
SYNC_AUDIT = r'''
import json, os, sys, warnings
from collections import Counter, defaultdict
import torch
from vlp.train.fault_seams import TrainHooks

ENGINE = ("deepspeed/", "accelerate/", "torch/autograd/", "torch/optim/")


def owner(frame):
    """Who asked for the sync: walking out from the call, the loss, the loader or the engine when one
    of their frames comes first, else the trainer (its innermost vlp line), else other."""
    while frame is not None:
        path = frame.f_code.co_filename.replace(os.sep, "/")
        if "/vlp/objectives/" in path:
            return "loss", None
        if "/data_pipelines/" in path:
            return "data", None
        if any(part in path for part in ENGINE):
            return "engine", None
        if "/vlp/" in path:
            return "trainer", f"{path.rsplit('/vlp/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "other", None


class SyncAudit(TrainHooks):
    def __init__(self):
        self.step, self.counts, self.where = 0, defaultdict(Counter), Counter()
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.set_sync_debug_mode("warn")
            warnings.simplefilter("always", UserWarning)
            shown = warnings.showwarning

            def count(message, category, filename, lineno, file=None, line=None):
                if "synchroniz" not in str(message):
                    return shown(message, category, filename, lineno, file, line)
                who, where = owner(sys._getframe(1))
                self.counts[self.step][who] += 1
                if where:
                    self.where[where] += 1

            warnings.showwarning = count

    def loss(self, step, loss):
        self.step = step
        return loss


def write(audit, path):
    state = {"cuda": audit.cuda, "per_step": {str(k): dict(v) for k, v in sorted(audit.counts.items())},
             "trainer_sites": dict(audit.where.most_common(20))}
    with open(path, "w") as f:
        json.dump(state, f)


class Audit(SyncAudit):
    def __init__(self):
        super().__init__()
        import atexit
        if int(os.environ.get("RANK", "0")) == 0:
            atexit.register(write, self, os.environ["VLP_SYNC_AUDIT_OUT"])
'''
