"""Hard negatives: each type on hand-written captions, the guarantees, shard rewriting and import."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from data_pipelines.cli import main as vlp_data
from data_pipelines.loader import StreamingLoader
from data_pipelines.negatives import types as negative_types
from data_pipelines.negatives.lexicon import ATTRIBUTE_GROUPS, LexiconError, load_lexicon, pos_tag
from data_pipelines.negatives.rules import candidates, generate, normalise
from data_pipelines.negatives.types import TYPES
from tests.conftest import REPO, png, write_shards


def bag_of_words(text: str) -> list[str]:
    return sorted(normalise(text).split())


def of_type(caption: str, kind: str) -> list[str]:
    return candidates(caption, seed=0)[kind]


@pytest.mark.parametrize(
    "caption,kind,expected",
    [
        ("A dog chasing a cat on the grass.", "swap_nouns", "A cat chasing a dog on the grass."),
        ("A white cat sitting next to a black dog.", "swap_adjectives", "A black cat sitting next to a white dog."),
        ("A small boy holding a large umbrella.", "reshuffle_order", "A large umbrella holding a small boy."),
        ("A cat sitting on a table.", "replace_relation", "A cat sitting under a table."),
        ("A vase in front of a window.", "replace_relation", "A vase behind a window."),
        ("A man standing next to an old car.", "replace_adjectives", "A man standing next to a new car."),
        ("A clock on top of a wooden table.", "replace_relation", "A clock underneath a wooden table."),
    ],
)
def test_each_type_on_hand_written_captions(caption, kind, expected):
    assert expected in of_type(caption, kind)


def test_replacements_stay_in_their_kind_and_fix_articles():
    colours = of_type("A red bus parked on the street.", "replace_adjectives")
    assert colours and all(c.split()[1] in ATTRIBUTE_GROUPS["colour"] and c.split()[1] != "red" for c in colours)
    animals = of_type("Two dogs sleeping on a couch.", "replace_nouns")
    assert any(
        t.startswith("Two ") and (t.split()[1].endswith("s") or t.split()[1] in ("sheep", "deer", "fish"))
        for t in animals
    )  # the plural survives
    article = of_type("A cat eating an apple.", "replace_nouns")
    for text in article:
        words = text.lower().rstrip(".").split()
        for art, nxt in zip(words, words[1:], strict=False):
            if art in ("a", "an"):
                assert (art == "an") == (nxt[0] in "aeiou"), text
    verbs = of_type("A man riding a horse.", "replace_relation")
    assert any(v.startswith("A man ") and v.split()[2].endswith("ing") and v.split()[2] != "riding" for v in verbs)


def test_guarantees_on_the_real_sugarcrepe_positives(sugarcrepe):
    captions = [v["caption"] for f in sorted(sugarcrepe.glob("*.json")) for v in json.loads(f.read_text()).values()]
    assert len(captions) == 7511
    covered = 0
    for caption in captions:
        negs = generate(caption, k=4, seed=0, tagger=None)
        covered += bool(negs)
        assert len(negs) <= 4
        texts = [normalise(n["text"]) for n in negs]
        assert normalise(caption) not in texts and len(set(texts)) == len(texts)
        for n in negs:
            assert n["type"] in TYPES
            if n["type"].startswith("swap") or n["type"] == "reshuffle_order":
                assert bag_of_words(n["text"]) == bag_of_words(caption), (caption, n)
    assert covered / len(captions) >= 0.90


def test_deterministic_per_caption_and_seed_and_typed_filter():
    caption = "Two brown horses standing in a green field next to a wooden fence."
    a = generate(caption, k=6, seed=3)
    assert a == generate(caption, k=6, seed=3)
    assert generate(caption, k=6, seed=4) != a  # another seed, other choices
    only = generate(caption, k=3, types=["swap_nouns"])
    assert only and all(n["type"] == "swap_nouns" for n in only)
    assert generate("", k=4) == [] and generate("Hello there!", k=4) == []  # nothing to perturb: nothing
    with pytest.raises(ValueError, match="unknown negative types"):
        generate(caption, types=["swap_verbs"])


def test_a_tagger_resolves_what_the_lexicon_cannot():
    caption = "A glass on a table."  # "glass": a cup (noun) or a material (adjective)?
    lexicon_only = {n["type"] for n in generate(caption, k=6, tagger=None)}
    assert "replace_adjectives" not in lexicon_only  # read as a noun

    def tagger(text):  # spaCy's interface: (start, end, coarse tag) per token
        return [(2, 7, "ADJ")]

    tagged = generate(caption, k=6, tagger=tagger)
    assert "replace_adjectives" in {n["type"] for n in tagged}


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def _samples(n: int) -> list[dict]:
    out = []
    for i in range(n):
        s = {
            "__key__": f"k{i:03d}",
            "png": png((i, 2, 3)),
            "txt": f"A white cat sitting next to a black dog {i}.".encode(),
        }
        if i % 3 == 0:
            s["json"] = json.dumps({"source": "web", "id": i}).encode()
        out.append(s)
    out.append({"__key__": "k_nocap", "png": png()})  # nothing to perturb: kept as is
    return out


def test_rewrite_adds_negatives_and_loses_nothing(tmp_path, capsys, preprocess, tokenizer):
    src = tmp_path / "src"
    write_shards(src, _samples(11), shard_size=5)
    out = tmp_path / "out"
    assert vlp_data(["negatives", str(src), "--out", str(out), "--k", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 12 and summary["with_negatives"] == 11 and summary["shards"] == 3
    assert json.loads((out / "sizes.json").read_text()) == json.loads((src / "sizes.json").read_text())
    for shard in sorted(src.glob("*.tar")):
        before, after = _tar_members(shard), _tar_members(out / shard.name)
        assert set(before) <= set(after) and all(name.endswith(".json") for name in set(after) - set(before))
        for name, data in after.items():
            if name.endswith(".json"):
                meta = json.loads(data)
                original = json.loads(before[name]) if name in before else {}
                assert {k: v for k, v in meta.items() if k != "negatives"} == original
                assert 1 <= len(meta["negatives"]) <= 3
            else:
                assert data == before[name]  # byte-identical
    # The loader yields them as B x K x L tokens with a mask.
    batch = next(
        iter(
            StreamingLoader(
                out,
                preprocess=preprocess,
                tokenizer=tokenizer,
                batch_size=4,
                num_negatives=3,
                epochs=1,
                shuffle_buffer=0,
            )
        )
    )
    assert batch["neg_text"].shape == (4, 3, 77) and batch["neg_mask"].shape == (4, 3)
    meta = json.loads(_tar_members(out / "shard-000000.tar")["k000.json"])
    want = tokenizer([n["text"] for n in meta["negatives"]])
    assert torch.equal(batch["neg_text"][0, : len(want)], want)
    assert vlp_data(["negatives", str(src), "--out", str(out)]) == 2  # never over existing output
    assert "not empty" in capsys.readouterr().err


def test_import_degla_json_and_key_jsonl(tmp_path, capsys):
    src = tmp_path / "src"
    write_shards(src, _samples(6), shard_size=10)
    degla = tmp_path / "degla.json"
    degla.write_text(
        json.dumps(
            [
                {
                    "image_id": 1,
                    "original": "a white cat sitting next to a black dog 0",
                    "enhanced": ["neg a", "neg b"],
                },
                {"image_id": 2, "original": "A WHITE CAT SITTING NEXT TO A BLACK DOG 4!", "enhanced": ["neg c"]},
                {"image_id": 3, "original": "a caption no sample has", "enhanced": ["neg d"]},
            ]
        )
    )
    assert vlp_data(["negatives", str(src), "--out", str(tmp_path / "o1"), "--from-jsonl", str(degla)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["matched"] == 2 and summary["unmatched_samples"] == 5 and summary["unused_imports"] == 1
    members = _tar_members(tmp_path / "o1" / "shard-000000.tar")
    assert json.loads(members["k000.json"])["negatives"] == [
        {"text": "neg a", "type": "imported"},
        {"text": "neg b", "type": "imported"},
    ]
    assert json.loads(members["k004.json"])["negatives"] == [{"text": "neg c", "type": "imported"}]
    assert "negatives" not in json.loads(members.get("k001.json", b"{}"))

    jsonl = tmp_path / "negs.jsonl"
    jsonl.write_text(
        json.dumps({"key": "k002", "negatives": [{"text": "x", "type": "swap_nouns"}]})
        + "\n"
        + json.dumps({"caption": "A white cat sitting next to a black dog 5.", "negatives": ["y"]})
        + "\n"
    )
    assert vlp_data(["negatives", str(src), "--out", str(tmp_path / "o2"), "--from-jsonl", str(jsonl)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["matched"] == 2 and summary["unused_imports"] == 0
    members = _tar_members(tmp_path / "o2" / "shard-000000.tar")
    assert json.loads(members["k002.json"])["negatives"] == [{"text": "x", "type": "swap_nouns"}]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": "k1", "negatives": ["ok"]}) + "\n" + '{"caption": "x"}\n')
    assert vlp_data(["negatives", str(src), "--out", str(tmp_path / "o3"), "--from-jsonl", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()


def test_report_on_sugarcrepe(sugarcrepe, capsys, tmp_path):
    out = tmp_path / "report.json"
    assert vlp_data(["negatives", "--report", "--sugarcrepe", str(sugarcrepe), "--json", str(out)]) == 0
    rows = {r["file"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj"}
    assert rows["swap_obj"]["n"] == 245 and rows["replace_obj"]["n"] == 1652
    assert rows["replace_obj"]["matching_type"] > 0.9 and rows["swap_att"]["exact_any"] > 0.3
    assert "| replace_rel |" in capsys.readouterr().out


def test_the_lexicon_refuses_a_word_listed_twice(tmp_path):
    tables = {
        "attributes": {"colour": ["red", "dark"], "state": ["wet", "dark"]},
        "attribute_opposites": {},
        "nouns": {"animal": ["dog"]},
        "irregular_plurals": {},
        "relations": {},
        "verbs": {},
        "verb_base_forms": {},
    }
    path = tmp_path / "lexicon.json"
    path.write_text(json.dumps(tables))
    with pytest.raises(LexiconError, match=r"'dark' is listed twice in attributes, in groups 'colour' and 'state'"):
        load_lexicon(path)
    tables["attributes"] = {"colour": ["red"], "state": ["empty", "wet", "empty"]}
    path.write_text(json.dumps(tables))
    with pytest.raises(LexiconError, match=r"'empty' is listed twice in attributes, in group 'state'"):
        load_lexicon(path)
    path.write_text(json.dumps(tables).replace('"relations": {}', '"relations": {"on": "under", "on": "off"}'))
    with pytest.raises(LexiconError, match=r"key 'on' is given twice"):
        load_lexicon(path)
    tables["attributes"] = {"colour": ["red"], "state": ["wet"]}
    path.write_text(json.dumps(tables))
    assert load_lexicon(path).attributes == {"colour": ["red"], "state": ["wet"]}


def test_lexicon_part_of_speech_tags():
    # "glass" is a material and a cup: a noun first; "two" is a count attribute
    assert pos_tag(["two", "dogs", "on", "a", "red", "glass"]) == ["ADJ", "NOUN", "X", "X", "ADJ", "NOUN"]


def test_negative_types_are_named_only_in_types_py():
    """Every module that makes, reads or scores negatives takes the type names from negatives/types.py."""
    names = [*TYPES, negative_types.IMPORTED]
    assert len(set(names)) == len(names)
    defining = REPO / "data_pipelines" / "negatives" / "types.py"
    for folder in ("data_pipelines", "eval_zeroshot"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == defining:
                continue
            text = path.read_text()
            for name in names:
                assert f'"{name}"' not in text and f"'{name}'" not in text, (path, name)
