"""OpenAI-style TorchScript checkpoints as model.pretrained: refused by weights_only loading, read
through TorchScript's loader or converted once to safetensors (tested on a scripted open_clip model)."""

from __future__ import annotations

import pytest
import torch

from tests.runs import REPO
from vlp.config import ModelConfig
from vlp.export import main as vlp_export
from vlp.model import build_model
from vlp.torchscript import is_torchscript_archive

ARCH = str(REPO / "configs/models/vlp-tiny-vit.json")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A TorchScript archive of an open_clip architecture, as OpenAI shipped ViT-B-32.pt, and its weights."""
    torch.manual_seed(1)
    model = build_model(ModelConfig(name=ARCH)).model.eval()
    path = tmp_path_factory.mktemp("openai") / "tiny.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(model: torch.nn.Module, expected: dict) -> bool:
    got = model.state_dict()
    return got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)


def test_weights_only_loading_refuses_the_archive(archive):
    path, _ = archive
    with pytest.raises(RuntimeError, match="TorchScript"):
        torch.load(path, weights_only=True)
    assert is_torchscript_archive(path)


def test_the_archive_is_usable_directly_and_converted(archive, tmp_path, capsys):
    path, weights = archive
    direct = build_model(ModelConfig(name=ARCH, pretrained=str(path))).model
    assert same_weights(direct, weights)
    out = tmp_path / "tiny.safetensors"
    assert vlp_export(["convert", str(path), "--out", str(out)]) == 0
    assert not is_torchscript_archive(out)
    converted = build_model(ModelConfig(name=ARCH, pretrained=str(out))).model
    assert same_weights(converted, weights)


def test_convert_refuses_what_is_not_an_archive(tmp_path, capsys):
    plain = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    assert not is_torchscript_archive(plain)
    assert vlp_export(["convert", str(plain), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "is not a TorchScript archive" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
