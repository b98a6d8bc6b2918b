"""Zero-shot evaluation throughput (images/s) at 64 and 224 px: vlp-eval against CLIP_benchmark.

Both evaluate the same model on the same shapes-world zero-shot split in fp32 (CLIP_benchmark with
AMP off), one process, batch 64; CLIP_benchmark decodes in 1 DataLoader worker, vlp in-process.
64 px: configs/models/vlp-tiny.json (randomly initialised); 224 px: ViT-B-32 (randomly initialised,
nothing is downloaded). The time covers the class embeddings and all images; the metrics of the two
are printed side by side as a check (they agree to 1e-6, see tests/test_eval_zeroshot.py).

Usage: python benchmarks/eval.py [--per-class 20] [--json FILE]
Smallest (a check that it runs, not a measurement; tests/test_benchmarks.py runs it):
  python benchmarks/eval.py --per-class 1 --json /tmp/eval.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from _machine import report

from data_pipelines.sources.shapes import WorldConfig, generate_world
from eval_zeroshot.datasets import read_wds
from eval_zeroshot.models import register_architecture
from eval_zeroshot.zeroshot import evaluate

REPO = Path(__file__).resolve().parents[1]


def clip_benchmark_rate(model, preprocess, tokenizer, root: Path, split: str, batch: int) -> tuple[float, dict]:
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification

    ds = build_dataset("wds/shapes", root=str(root), transform=preprocess, split=split)
    n = int(sum(1 for _ in ds))
    loader = torch.utils.data.DataLoader(ds.batched(batch), batch_size=None, num_workers=1)
    loader.dataset.classes = ds.classes  # what its evaluate() reads for the acc5 rule
    start = time.perf_counter()
    metrics = zeroshot_classification.evaluate(model, loader, tokenizer, ds.classes, ds.templates, "cpu", amp=False)
    return n / (time.perf_counter() - start), metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--per-class", type=int, default=20, help="zero-shot images per class in each world")
    p.add_argument("--json", default="benchmarks/results/eval.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, name, split in ((64, "vlp-tiny", "test"), (224, "ViT-B-32", "heldout")):
            root = Path(tmp) / f"w{size}"
            generate_world(
                root,
                WorldConfig(
                    train_samples=10, image_size=size, zeroshot_per_class=args.per_class, compositional_per_type=1
                ),
                log=lambda _: None,
            )
            if name == "vlp-tiny":
                name = register_architecture(REPO / "configs" / "models" / "vlp-tiny.json")
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
            model.eval()
            tokenizer = open_clip.get_tokenizer(name)
            ds = read_wds(root / "zeroshot", split)
            print(f"  {size}px {name}: vlp ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            ours = evaluate(model, preprocess, tokenizer, ds, "cpu", args.batch_size)
            ours_rate = len(ds.items) / (time.perf_counter() - start)
            print(f"  {size}px {name}: CLIP_benchmark ...", file=sys.stderr, flush=True)
            theirs_rate, theirs = clip_benchmark_rate(
                model, preprocess, tokenizer, root / "zeroshot", split, args.batch_size
            )
            rows.append(
                {
                    "image_size": size,
                    "model": name,
                    "images": len(ds.items),
                    "vlp_images_per_s": round(ours_rate, 1),
                    "clip_benchmark_images_per_s": round(theirs_rate, 1),
                    "ratio": round(ours_rate / theirs_rate, 2),
                    "acc1_vlp": round(ours["acc1"], 4),
                    "acc1_clip_benchmark": round(theirs["acc1"], 4),
                }
            )
    columns = [
        "image_size",
        "model",
        "images",
        "vlp_images_per_s",
        "clip_benchmark_images_per_s",
        "ratio",
        "acc1_vlp",
        "acc1_clip_benchmark",
    ]
    report(f"Zero-shot classification, images/s, one CPU process, fp32, batch {args.batch_size}:", rows, columns, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
