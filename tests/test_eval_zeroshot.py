"""Zero-shot evaluation: a hand-built case with a known answer, equality with CLIP_benchmark on the
shapes world (classification and retrieval), and clear errors for bad datasets."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval_zeroshot.cli import main as vlp_eval
from eval_zeroshot.datasets import EvalSet, Item
from eval_zeroshot.zeroshot import evaluate, retrieval_metrics
from tests.conftest import REPO, write_shards

BIN = Path(sys.executable).parent


class ColourModel(torch.nn.Module):
    """Images: their mean RGB; texts: the colour named by the token id. A model whose answers are known."""

    COLOURS = {1: (1.0, 0.0, 0.0), 2: (0.0, 1.0, 0.0), 3: (0.0, 0.0, 1.0)}

    def encode_image(self, x):
        return x.mean(dim=(2, 3))

    def encode_text(self, tokens):
        return torch.tensor([self.COLOURS[int(t[0])] for t in tokens])


def zeroshot(model: Path, *args: str) -> int:
    """``vlp-eval zeroshot`` on the exported model; returns the exit status."""
    return vlp_eval(["zeroshot", "--model", f"local-dir:{model}", *args])


def colour_image(rgb):
    return lambda: Image.new("RGB", (4, 4), rgb)


def to_tensor(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255


def tokenizer(texts):
    return torch.tensor([[{"red": 1, "green": 2, "blue": 3}[t.split()[-1]]] for t in texts])


def test_hand_built_classification_and_retrieval():
    items = [
        Item(colour_image((250, 10, 10)), label=0),
        Item(colour_image((200, 0, 30)), label=0),
        Item(colour_image((0, 220, 0)), label=1),
        Item(colour_image((0, 200, 100)), label=2),  # a blue that looks green: wrong
    ]
    ds = EvalSet("colours", "classification", items, ["red", "green", "blue"], ["a {c}"])
    m = evaluate(ColourModel(), to_tensor, tokenizer, ds, batch_size=3)
    assert m["acc1"] == pytest.approx(0.75)
    assert m["mean_per_class_recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert math.isnan(m["acc5"])  # fewer than 5 classes, as CLIP_benchmark
    # Retrieval by hand: 3 images, 4 captions; caption 3 (blue) belongs to image 0 but points at image 2.
    image = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    owner = torch.tensor([0, 1, 2, 0])
    r = retrieval_metrics(image, text, owner, ks=(1, 2))
    assert r["image_retrieval_recall@1"] == pytest.approx(3 / 4)
    assert r["text_retrieval_recall@1"] == pytest.approx(3 / 3)  # image 0: caption 0 ranks first
    assert r["image_retrieval_recall@2"] == pytest.approx(4 / 4)


def clip_benchmark(model: Path, root: Path, split: str, task: str, out: Path) -> dict:
    cmd = [
        str(BIN / "clip_benchmark"),
        "eval",
        "--model",
        f"local-dir:{model}",
        "--pretrained",
        "",
        "--dataset",
        "wds/shapes",
        "--dataset_root",
        str(root),
        "--split",
        split,
        "--task",
        task,
        "--no_amp",
        "--batch_size",
        "32",
        "--output",
        str(out),
        "--recall_k",
        "1",
        "5",
        "10",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())["metrics"]


def retrieval_set(world: Path, out: Path) -> Path:
    """A CLIP_benchmark retrieval dataset (wds, dataset_type.txt = retrieval) from shapes images."""
    data = json.loads((world / "compositional" / "replace_rel.json").read_text())
    samples = []
    for key, item in data.items():
        png = (world / "compositional" / "images" / item["filename"]).read_bytes()
        samples.append(
            {
                "__key__": f"r{int(key):04d}",
                "png": png,
                "txt": (item["caption"] + "\n" + item["caption"].upper()).encode(),
            }
        )
    write_shards(out / "test", samples, shard_size=1, pattern="{}.tar")  # >= CLIP_benchmark's 4 workers
    (out / "test" / "nshards.txt").write_text(str(len(list((out / "test").glob("*.tar")))))
    (out / "dataset_type.txt").write_text("retrieval\n")
    return out


def test_equal_to_clip_benchmark(world, exported, tmp_path, capsys):
    root = world / "zeroshot"
    for split in ("test", "heldout"):
        theirs = clip_benchmark(exported, root, split, "zeroshot_classification", tmp_path / f"cb_{split}.json")
        out = tmp_path / f"ours_{split}.json"
        assert zeroshot(exported, "--dataset", str(root), "--split", split, "--out", str(out)) == 0
        ours = json.loads(out.read_text())["results"][0]["metrics"]
        assert set(ours) == set(theirs)
        for name in theirs:
            assert ours[name] == pytest.approx(theirs[name], abs=1e-6), (split, name)
    retrieval = retrieval_set(world, tmp_path / "retrieval")
    theirs = clip_benchmark(exported, retrieval, "test", "zeroshot_retrieval", tmp_path / "cb_ret.json")
    out = tmp_path / "ours_ret.json"
    assert zeroshot(exported, "--dataset", str(retrieval), "--out", str(out)) == 0
    ours = json.loads(out.read_text())["results"][0]["metrics"]
    assert set(ours) == set(theirs)
    for name in theirs:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name
    assert "| retrieval | test |" in capsys.readouterr().out


def test_image_folder_and_caption_table(exported, tmp_path):
    for c, rgb in (("red", (220, 20, 20)), ("green", (20, 200, 20))):
        (tmp_path / "folder" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), rgb).save(tmp_path / "folder" / c / f"{i}.png")
    templates = tmp_path / "t.txt"
    templates.write_text("a photo of a {c} thing.\n{c}\n")
    table = tmp_path / "pairs.csv"
    table.write_text(
        "image,caption\nfolder/red/0.png,a red square\nfolder/red/0.png,red\nfolder/green/0.png,a green square\n"
    )
    out = tmp_path / "r.json"
    dataset = ("--dataset", str(tmp_path / "folder"), str(table))
    assert zeroshot(exported, *dataset, "--templates", str(templates), "--out", str(out)) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["task"] for r in results] == ["classification", "retrieval"]
    assert results[0]["counts"] == {"images": 6, "classes": 2} and results[1]["counts"] == {"images": 2, "captions": 3}
    assert results[0]["templates"] == ["a photo of a {c} thing.", "{c}"]


def test_bad_datasets_are_clear_errors(exported, world, tmp_path, capsys):
    no_names = tmp_path / "no_names"
    (no_names / "test").mkdir(parents=True)
    write_shards(
        no_names / "test",
        [{"__key__": "a", "png": (world / "compositional/images").glob("*.png").__next__().read_bytes(), "cls": b"0"}],
        shard_size=1,
        pattern="{}.tar",
    )
    (no_names / "test" / "nshards.txt").write_text("1")
    assert zeroshot(exported, "--dataset", str(no_names)) == 2
    assert "classnames.txt is missing" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "test").mkdir(parents=True)
    (empty / "test" / "nshards.txt").write_text("0")
    (empty / "classnames.txt").write_text("x\n")
    assert zeroshot(exported, "--dataset", str(empty)) == 2
    assert "holds no samples" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "cat").mkdir(parents=True)
    (broken / "cat" / "0.png").write_bytes(b"not an image")
    assert zeroshot(exported, "--dataset", str(broken), "--templates", str(REPO / "README.md")) == 2
    assert "needs a {c} placeholder" in capsys.readouterr().err
    templates = tmp_path / "t.txt"
    templates.write_text("{c}\n")
    assert zeroshot(exported, "--dataset", str(broken), "--templates", str(templates)) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "0.png" in err
    assert zeroshot(exported, "--dataset", str(tmp_path / "nowhere")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert vlp_eval(["zeroshot", "--model", "no-such-model", "--dataset", str(world / "zeroshot")]) == 2
    assert "cannot load model" in capsys.readouterr().err
