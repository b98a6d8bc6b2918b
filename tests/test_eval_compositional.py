"""Compositional evaluation: the official tie rules, bbox crops, macro averages, perturbations, the real
SugarCrepe files (official counts), missing images, and the shapes world end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from eval_zeroshot import compositional as C
from eval_zeroshot import word_order
from eval_zeroshot.cli import main as vlp_eval

OFFICIAL_COUNTS = {
    "replace_obj": 1652,
    "replace_att": 788,
    "replace_rel": 1406,
    "swap_obj": 245,
    "swap_att": 666,
    "add_obj": 2062,
    "add_att": 692,
}


def compositional(model: Path, benchmark: str, data: Path, *more: str) -> int:
    """``vlp-eval compositional`` on the exported model; returns the exit status."""
    return vlp_eval(
        ["compositional", "--model", f"local-dir:{model}", "--benchmark", benchmark, "--data", str(data), *more]
    )


def test_tie_rules():
    f = torch.tensor([[1.0, 0.0]])
    same = torch.tensor([[0.6, 0.8]])
    assert not C.strict_pair_correct(f, same, same).item()  # SugarCrepe: a tie is wrong
    tied = torch.tensor([[0.3, 0.3]])
    assert not C.first_argmax_correct(tied, 1).item()  # ARO VG: [false, true], a tie picks false
    tied5 = torch.tensor([[0.2, 0.2, 0.1, 0.2, 0.0]])
    assert C.first_argmax_correct(tied5, 0).item()  # ARO order: a tie with the original is correct
    assert C.strict_pair_correct(f, torch.tensor([[0.7, 0.7]]), same).item()


class MeanColour(torch.nn.Module):
    """Image: mean RGB; text: a colour by name. Lets a test know what a crop should change."""

    def encode_image(self, x):
        return x.mean(dim=(2, 3))

    def encode_text(self, tokens):
        return tokens.float()


def colour_tokens(texts):
    table = {"red": [1.0, 0, 0], "blue": [0, 0, 1.0]}
    return torch.tensor([table[t.split()[-1]] for t in texts])


def to_tensor(image):
    import numpy as np

    return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1) / 255


def test_vg_bbox_crop_decides(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))  # left half red
    (tmp_path / "images").mkdir()
    image.save(tmp_path / "images" / "1.jpg")
    recs = [
        {
            "image_path": "1.jpg",
            "bbox_x": 0,
            "bbox_y": 0,
            "bbox_w": 10,
            "bbox_h": 10,
            "true_caption": "the red",
            "false_caption": "the blue",
            "relation_name": "r",
        },
        {
            "image_path": "1.jpg",
            "bbox_x": 10,
            "bbox_y": 0,
            "bbox_w": 10,
            "bbox_h": 10,
            "true_caption": "the blue",
            "false_caption": "the red",
            "relation_name": "r",
        },
    ]
    assert C.crop_box(recs[1]) == (10, 0, 20, 10)
    scorer = C.Scorer(MeanColour(), to_tensor, colour_tokens, torch.device("cpu"))
    correct = C.score_aro_vg(scorer, recs, tmp_path / "images")
    assert correct.tolist() == [True, True]  # uncropped, both would see the same purple mean


def test_macro_average_exclusions_and_minimum():
    correct = torch.tensor([True, False, True, True, False, True])
    groups = ["on", "on", "under", "under", "beside", "beside"]
    score, kept = C.macro_accuracy(correct, groups, exclude={"beside"})
    assert score == pytest.approx((0.5 + 1.0) / 2) and set(kept) == {"on", "under"}
    correct = torch.tensor([True] * 25 + [False] * 3)
    groups = ["a_b"] * 25 + ["c_d"] * 3
    score, kept = C.macro_accuracy(correct, groups, min_cases=25)
    assert score == 1.0 and set(kept) == {"a_b"}


def test_order_perturbations_keep_words_and_follow_the_seed():
    caption = "A young man in a red shirt is riding a brown horse next to an old wooden fence."
    tagger = word_order.lexicon_pos_tagger()
    a = word_order.order_options(caption, tagger, random.Random(1))
    b = word_order.order_options(caption, tagger, random.Random(1))
    c = word_order.order_options(caption, tagger, random.Random(2))
    assert a == b and a != c
    assert a[0] == word_order.pre_caption(caption)
    for option in a:
        assert sorted(option.split()) == sorted(a[0].split())
    assert len({*a}) == 5
    assert word_order.pre_caption('A "Big" dog: (happy)!  ' + " w" * 40).split()[:4] == ["a", "big", "dog", "happy"]
    assert len(word_order.pre_caption(" ".join(["w"] * 40)).split()) == 30


def test_sugarcrepe_files_give_the_official_counts(exported, sugarcrepe, tmp_path, capsys):
    images = tmp_path / "val2017"
    images.mkdir()
    names = {item["filename"] for f in sugarcrepe.glob("*.json") for item in json.loads(f.read_text()).values()}
    assert len(names) == 1560
    for i, name in enumerate(sorted(names)):
        Image.new("RGB", (8, 8), (i % 256, (7 * i) % 256, 99)).save(images / name, format="JPEG")
    out = tmp_path / "sc.json"
    args = ("--images", str(images), "--out", str(out), "--batch-size", "256")
    assert compositional(exported, "sugarcrepe", sugarcrepe, *args) == 0
    result = json.loads(out.read_text())
    assert {k: v["n"] for k, v in result["subsets"].items()} == OFFICIAL_COUNTS
    assert {k: v["n"] for k, v in result["pooled"].items()} == {"REPLACE": 3846, "SWAP": 911, "ADD": 2754}
    table = capsys.readouterr().out
    assert "| CLIP ViT-B/32 | 68.8 |" in table and "| DeGLA | 95.7 |" in table  # add_att comes first
    assert out.with_suffix(".png").is_file()
    # One image missing: listed before any compute, with the count.
    (images / sorted(names)[0]).unlink()
    (images / sorted(names)[1]).unlink()
    assert compositional(exported, "sugarcrepe", sugarcrepe, *args) == 2
    err = capsys.readouterr().err
    assert "2 images of" in err and sorted(names)[0] in err


def test_aro_vg_and_order_from_the_command_line(exported, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (50 * i, 80, 120)).save(images / f"{i}.jpg")
    relations = [
        {
            "image_path": f"{i % 3}.jpg",
            "bbox_x": 2,
            "bbox_y": 3,
            "bbox_w": 20,
            "bbox_h": 15,
            "true_caption": "the cup is on the table",
            "false_caption": "the table is on the cup",
            "relation_name": ["on", "under", "beside"][i % 3],
        }
        for i in range(9)
    ]
    vgr = tmp_path / "visual_genome_relation.json"
    vgr.write_text(json.dumps(relations))
    exclude = tmp_path / "excluded.json"
    exclude.write_text(json.dumps(["beside"]))
    out = tmp_path / "vgr.json"
    assert compositional(exported, "aro-vgr", vgr, "--exclude", str(exclude), "--out", str(out)) == 0
    result = json.loads(out.read_text())
    assert set(result["groups"]) == {"on", "under"} and result["subsets"]["vg_relation"]["n"] == 6
    karpathy = tmp_path / "coco_karpathy_test.json"
    karpathy.write_text(
        json.dumps(
            [
                {
                    "image": f"images/{i}.jpg",
                    "caption": ["a red dog sitting on a green couch", "two old men walking in the park"],
                }
                for i in range(3)
            ]
        )
    )
    out = tmp_path / "order.json"
    assert compositional(exported, "aro-coco-order", karpathy, "--tagger", "lexicon", "--out", str(out)) == 0
    assert json.loads(out.read_text())["subsets"]["coco_order"]["n"] == 6
    try:
        import spacy  # noqa: F401

        has_spacy = True
    except ImportError:
        has_spacy = False
    if not has_spacy:  # the default tagger is spaCy's; without it, a clear message
        assert compositional(exported, "aro-coco-order", karpathy) == 2
        assert "en_core_web_sm" in capsys.readouterr().err


def test_shapes_world_with_the_heldout_split(exported, world, tmp_path):
    out = tmp_path / "shapes.json"
    assert compositional(exported, "shapes", world / "compositional", "--out", str(out)) == 0
    subsets = json.loads(out.read_text())["subsets"]
    assert set(subsets) == {
        f"{p}{k}"
        for p in ("", "heldout/")
        for k in ("replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
    }
    assert all(v["n"] == 12 for v in subsets.values())
    assert Path(out.with_suffix(".png")).is_file()
