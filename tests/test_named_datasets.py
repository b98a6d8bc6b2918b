"""Named datasets: ImageNet's synset folders (and CLIP_benchmark's wds ImageNet) classified among the
1,000 classes with open_clip's names and templates, numbers equal to CLIP_benchmark's on the same
images; exact-fraction accuracies; and the same names in eval.zeroshot during training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from eval_zeroshot.cli import main as vlp_eval
from eval_zeroshot.dataset_specs import read_dataset, split_spec
from eval_zeroshot.datasets import DatasetError
from eval_zeroshot.named import imagenet_synsets, lookup
from tests.conftest import write_shards

# ImageNet-1k's class indices in the standard order (torchvision's sorted synset folders), as published
# with the dataset: facts written by hand here, not computed by the code under test.
KNOWN = {"n01440764": (0, "tench"), "n02123045": (281, "tabby cat"), "n15075141": (999, "toilet paper")}


@pytest.fixture(scope="module")
def synset_folder(tmp_path_factory) -> Path:
    """ImageNet's validation layout with real synset names: 3 synsets x 2 JPEGs (upper-case .JPEG)."""
    root = tmp_path_factory.mktemp("imagenet") / "val"
    rng = random.Random(0)
    for synset in KNOWN:
        (root / synset).mkdir(parents=True)
        for i in range(2):
            colour = tuple(rng.randrange(256) for _ in range(3))
            Image.new("RGB", (80, 60), colour).save(root / synset / f"ILSVRC2012_val_{i:08d}.JPEG", format="JPEG")
    return root


def test_synsets_map_to_open_clips_names_in_the_standard_order():
    synsets = imagenet_synsets()
    assert len(set(synsets)) == 1000 and list(synsets) == sorted(synsets)
    named = lookup("imagenet")
    for synset, (index, name) in KNOWN.items():
        assert synsets[index] == synset and named.classnames[index] == name
    assert len(named.templates) == 80 and named.templates[0] == "a bad photo of a {c}."
    # CLIP_benchmark carries the same 1,000 names (its own copy): both references agree
    cb = json.loads((Path(__import__("clip_benchmark").__file__).parent / "datasets/en_classnames.json").read_text())
    assert list(named.classnames) == cb["imagenet1k"]
    a = lookup("imagenet-a")  # a 200-class subset, in ImageNet's order
    assert len(a.classnames) == 200 and a.classnames[0] == "stingray"


def test_the_folder_reads_as_1000_way_classification(synset_folder):
    ds = read_dataset(f"imagenet:{synset_folder}")
    assert ds.name == "imagenet1k" and len(ds.classnames) == 1000 and len(ds.templates) == 80
    assert sorted({item.label for item in ds.items}) == sorted(i for i, _ in KNOWN.values())
    assert split_spec(f"imagenet:{synset_folder}") == (f"imagenet:{synset_folder}", "test")
    assert split_spec(f"imagenet:{synset_folder}:val") == (f"imagenet:{synset_folder}", "val")


def as_clip_benchmark_wds(folder: Path, out: Path) -> Path:
    """CLIP_benchmark's wds export of ImageNet (``.cls`` = class index, templates file, no class names
    file here, so the named dataset must bring them)."""
    samples = [
        {"__key__": f"s{i:04d}", "jpg": path.read_bytes(), "cls": str(KNOWN[path.parent.name][0]).encode()}
        for i, path in enumerate(sorted(folder.rglob("*.JPEG")))
    ]
    (out / "test").mkdir(parents=True)
    write_shards(out / "test", samples, 4, pattern="{}.tar")
    (out / "test" / "nshards.txt").write_text(str(len(list((out / "test").glob("*.tar")))))
    return out


def test_equal_to_clip_benchmark_on_the_same_images(synset_folder, exported, tmp_path):
    """vlp-eval on imagenet:FOLDER with the 7 short templates = CLIP_benchmark's zero-shot evaluation of
    the same images, labels at ImageNet's indices, open_clip's 1,000 names; the wds twin reads the same."""
    from clip_benchmark.metrics.zeroshot_classification import evaluate as cb_evaluate

    from eval_zeroshot.models import load_model
    from eval_zeroshot.named import template_set

    out = tmp_path / "ours.json"
    wds = as_clip_benchmark_wds(synset_folder, tmp_path / "wds")
    spec = ["--dataset", f"imagenet:{synset_folder}", f"imagenet:{wds}", "--templates", "simple"]
    assert vlp_eval(["zeroshot", "--model", f"local-dir:{exported}", *spec, "--out", str(out)]) == 0
    folder_result, wds_result = json.loads(out.read_text())["results"]
    assert folder_result["counts"] == {"images": 6, "classes": 1000}
    assert folder_result["templates"] == template_set("simple") and len(folder_result["templates"]) == 7

    loaded = load_model(f"local-dir:{exported}")
    paths = sorted(synset_folder.rglob("*.JPEG"))
    images = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in paths])
    labels = torch.tensor([KNOWN[p.parent.name][0] for p in paths])
    classnames = list(lookup("imagenet").classnames)
    dataset = torch.utils.data.TensorDataset(images, labels)
    dataset.classes = classnames  # CLIP_benchmark reads the class count from its dataset
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    theirs = cb_evaluate(loaded.model, loader, loaded.tokenizer, classnames, template_set("simple"), "cpu", amp=False)
    for result in (folder_result, wds_result):
        assert set(result["metrics"]) == set(theirs)
        for name, value in theirs.items():
            assert result["metrics"][name] == pytest.approx(value, abs=1e-6), name
        # exact fractions of the counts written beside them
        assert result["n"] == 6 and result["metrics"]["acc1"] == result["correct"]["acc1"] / 6
        assert result["metrics"]["acc5"] == result["correct"]["acc5"] / 6


def test_exact_fractions_on_the_shapes_world(world, exported, tmp_path):
    out = tmp_path / "shapes.json"
    args = ["--dataset", str(world / "zeroshot"), "--split", "heldout", "--templates", "simple", "--out", str(out)]
    assert vlp_eval(["zeroshot", "--model", f"local-dir:{exported}", *args]) == 0
    result = json.loads(out.read_text())["results"][0]
    n = result["counts"]["images"]
    assert result["n"] == n and result["metrics"]["acc1"] == result["correct"]["acc1"] / n
    assert len(result["templates"]) == 7


def test_named_mistakes_are_one_message(tmp_path, synset_folder, capsys):
    (tmp_path / "val" / "goldfish").mkdir(parents=True)
    with pytest.raises(DatasetError, match="goldfish is not a WordNet synset folder"):
        read_dataset(f"imagenet:{tmp_path / 'val'}")
    (tmp_path / "a" / "n01440764").mkdir(parents=True)  # tench is not among ImageNet-A's 200
    with pytest.raises(DatasetError, match="n01440764 is not one of imagenet-a's 200 classes"):
        read_dataset(f"imagenet-a:{tmp_path / 'a'}")
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(f"imagenet:{tmp_path / 'nowhere'}")
    with pytest.raises(DatasetError, match="'foo' is not a dataset name"):
        read_dataset(f"foo:{tmp_path / 'nowhere'}")
    wds = as_clip_benchmark_wds(synset_folder, tmp_path / "wds")
    with pytest.raises(DatasetError, match=r"no split 'val' .* it has \['test'\]"):
        read_dataset(f"imagenet:{wds}", split="val")
    assert vlp_eval(["zeroshot", "--model", "x", "--dataset", f"imagenet:{synset_folder}", "--templates", "fancy"]) == 2
    assert "templates file fancy does not exist" in capsys.readouterr().err


def test_a_folder_named_like_a_dataset_keeps_both_meanings(synset_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").mkdir()  # ./imagenet:val is that folder's split; imagenet:/abs/path the named set
    assert split_spec("imagenet:val") == ("imagenet", "val")
    assert read_dataset(f"imagenet:{synset_folder}").name == "imagenet1k"


def test_eval_zeroshot_in_training_takes_the_name(synset_folder):
    from vlp.config import EvalConfig
    from vlp.train.evaluation import read_eval_sets

    (ds,) = read_eval_sets(EvalConfig(zeroshot=[f"imagenet:{synset_folder}"]))
    assert ds.name == "imagenet1k" and len(ds.classnames) == 1000 and len(ds.items) == 6
