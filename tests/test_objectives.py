"""The objectives against METHODS.md's hand checks and open_clip.ClipLoss, their masks and gradients,
and the distributed shell: 2 processes x batch B equal 1 process x batch 2B for every term."""

from __future__ import annotations

import math
import os
import socket

import open_clip
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlp.objectives import (
    Features,
    Objective,
    TermOptions,
    clip_loss,
    dcl_loss,
    distill_loss,
    igc_loss,
    negclip_loss,
    tgc_loss,
)
from vlp.protoclip.episode import ProtoInputs
from vlp.protoclip.loss import proto_loss

S2 = torch.tensor(2.0)


def unit(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def negclip_case():
    """B=2, K=1, s=2: i2t rows [pos_own, pos_other, neg_own, neg_other] = [2,0,1,0] and [0,2,0,1]."""
    v = unit([1, 0, 0], [0, 1, 0])
    u = unit([1, 0, 0], [0, 1, 0])
    neg = unit([0.5, 0, math.sqrt(0.75)], [0, 0.5, math.sqrt(0.75)])[:, None, :]
    return v, u, neg


def test_hand_checks_from_methods():
    v, u, neg = negclip_case()
    assert negclip_loss(v, u, neg, S2).item() == pytest.approx(0.310370, abs=1e-6)
    assert igc_loss(v, u, neg, S2).item() == pytest.approx(0.313262, abs=1e-6)
    assert dcl_loss(torch.eye(2), torch.eye(2), torch.tensor(10.0)).item() == pytest.approx(-10.0, abs=1e-6)
    # TGC: cos(u, u*) = 0.9 and cos(u, ū) = 0.8 at temperature 0.1 give logits [9, 8].
    t = unit([1, 0, 0])
    teacher = unit([0.9, math.sqrt(1 - 0.81), 0])
    negative = unit([0.8, 0, math.sqrt(1 - 0.64)])[:, None, :]
    assert tgc_loss(t, teacher, negative).item() == pytest.approx(0.313262, abs=1e-6)
    assert distill_loss(unit([1, 0]), unit([0.8, 0.6])).item() == pytest.approx(0.4, abs=1e-6)
    # NegCLIP with a hard-negative image (the twin): METHODS.md's check
    r = math.sqrt(0.75)
    e = torch.eye(4)
    twin = 0.5 * e[0] + r * e[1]
    images, captions = torch.stack([e[0], twin]), torch.stack([e[0], twin])
    negatives = torch.stack([0.5 * e[0] + r * e[2], 0.5 * twin + r * e[3]])[:, None]
    assert negclip_loss(images[:1], captions[:1], negatives[:1], S2).item() == pytest.approx(0.156631, abs=1e-6)
    assert negclip_loss(images, captions, negatives, S2).item() == pytest.approx(0.492820, abs=1e-6)
    centroids = unit([1, 0], [0.99, 0.141])
    loss = proto_loss(unit([1, 0]), torch.eye(2), centroids, torch.tensor([0]), 1 / 0.07, 0.01)
    assert loss.item() == pytest.approx(3.8420, abs=1e-3)


def test_clip_loss_equals_open_clip():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(16, 32, generator=g), dim=-1)
    text = F.normalize(torch.randn(16, 32, generator=g), dim=-1)
    scale = torch.tensor(14.3)
    reference = open_clip.ClipLoss()(image, text, scale)
    by_hand = (
        F.cross_entropy(scale * image @ text.T, torch.arange(16))
        + F.cross_entropy(scale * text @ image.T, torch.arange(16))
    ) / 2
    assert clip_loss(image, text, scale).item() == pytest.approx(reference.item(), abs=1e-6)
    assert clip_loss(image, text, scale).item() == pytest.approx(by_hand.item(), abs=1e-5)


def test_dcl_by_hand_and_dclw_weights():
    g = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    u = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    s = 7.0
    logits = s * v @ u.T
    off = ~torch.eye(5, dtype=torch.bool)
    i2t = (-logits.diag() + torch.stack([torch.logsumexp(logits[i][off[i]], 0) for i in range(5)])).mean()
    t2i = (-logits.diag() + torch.stack([torch.logsumexp(logits.T[i][off[i]], 0) for i in range(5)])).mean()
    assert dcl_loss(v, u, torch.tensor(s)).item() == pytest.approx(((i2t + t2i) / 2).item(), abs=1e-5)
    w = 2 - 5 * torch.softmax((v * u).sum(-1) / 0.5, 0)
    i2t_w = (-w * logits.diag() + torch.stack([torch.logsumexp(logits[i][off[i]], 0) for i in range(5)])).mean()
    t2i_w = (-w * logits.diag() + torch.stack([torch.logsumexp(logits.T[i][off[i]], 0) for i in range(5)])).mean()
    got = dcl_loss(v, u, torch.tensor(s), sigma=0.5)
    assert got.item() == pytest.approx(((i2t_w + t2i_w) / 2).item(), abs=1e-5)


def features(b: int, k: int, d: int = 16, seed: int = 0, grad: bool = True):
    g = torch.Generator().manual_seed(seed)

    def n(*shape):
        return F.normalize(torch.randn(*shape, generator=g), dim=-1)

    out = {
        "image": n(b, d),
        "text": n(b, d),
        "neg": n(b, k, d),
        "t_image": n(b, d),
        "t_text": n(b, d),
        "t_neg": n(b, k, d),
    }
    mask = torch.rand(b, k, generator=g) > 0.3
    mask[:, 0] = True
    out["mask"] = mask
    if grad:
        for key in ("image", "text", "neg"):
            out[key].requires_grad_(True)
    return out


def test_masks_drop_padding_and_gradients_are_finite():
    f = features(6, 4)
    mask = f["mask"]
    for loss in (
        negclip_loss(f["image"], f["text"], f["neg"], S2, mask),
        igc_loss(f["image"], f["text"], f["neg"], S2, mask),
        tgc_loss(f["text"], f["t_text"], f["neg"], 0.1, mask),
    ):
        grads = torch.autograd.grad(loss, [f["image"], f["text"], f["neg"]], allow_unused=True)
        assert torch.isfinite(loss)
        assert all(g is None or torch.isfinite(g).all() for g in grads)
        # padded negatives get no gradient at all
        neg_grad = grads[2]
        assert neg_grad is not None and (neg_grad[~mask].abs().sum() == 0)
    # With the mask, padding is exactly as if those negatives did not exist.
    b = 0
    kept = f["neg"][b : b + 1, mask[b]]
    alone = igc_loss(f["image"][b : b + 1], f["text"][b : b + 1], kept, S2)
    full = igc_loss(f["image"][b : b + 1], f["text"][b : b + 1], f["neg"][b : b + 1], S2, mask[b : b + 1])
    assert alone.item() == pytest.approx(full.item(), abs=1e-6)


def degla_released_tgc(text, teacher, neg_flat, k, temperature=0.1):
    """DeGLA's released layout (as METHODS.md describes it): caption rows against [teacher positives ;
    all negatives], with the diagonal mask tiled K times along the negative columns."""
    b = text.shape[0]
    logits = (1 / temperature) * text @ torch.cat([teacher, neg_flat]).T
    diag = torch.full((b, b), float("-inf"))
    diag.fill_diagonal_(0)
    logits = logits + torch.cat([diag, diag.repeat(1, k)], dim=1)
    return F.cross_entropy(logits, torch.arange(b))


def test_tgc_matches_degla_released_layout_for_k1_and_departs_for_k2():
    f = features(5, 1, grad=False)
    ours = tgc_loss(f["text"], f["t_text"], f["neg"])
    theirs = degla_released_tgc(f["text"], f["t_text"], f["neg"].reshape(5, -1), k=1)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    f = features(5, 2, grad=False)
    ours = tgc_loss(f["text"], f["t_text"], f["neg"])
    theirs = degla_released_tgc(f["text"], f["t_text"], f["neg"].reshape(10, -1), k=2)
    assert abs(ours.item() - theirs.item()) > 1e-3  # the tiled mask meets other captions' negatives


# ---------------------------------------------------------------- distributed equality

CASES = [
    ({"clip": 1.0}, {}),
    ({"dcl": 1.0}, {}),
    ({"dcl": 1.0}, {"options": TermOptions(dcl_sigma=0.5)}),
    ({"negclip": 1.0}, {}),
    ({"igc": 1.0}, {}),
    ({"tgc": 1.0}, {}),
    ({"distill": 1.0}, {}),
    ({"proto": 1.0}, {}),
    ({"negclip": 1.0, "tgc": 0.1, "igc": 0.1, "distill": 0.005}, {}),
]
B, K, P, KC = 4, 3, 8, 5


def _proto_inputs(h_image, h_text, rows, labels_i, labels_t, g_scale):
    g = torch.Generator().manual_seed(7)
    cents = [F.normalize(torch.randn(KC, P, generator=g), dim=-1) for _ in range(4)]
    return ProtoInputs(h_image, h_text, labels_i[rows], labels_t[rows], g_scale, *cents)


def _run_case(terms, extra, local_loss, rank, world):
    """The global batch is always 2B; this rank holds 2B / world of it."""
    n, local = 2 * B, 2 * B // world
    full = features(n, K, seed=3, grad=False)
    g = torch.Generator().manual_seed(5)
    h_i = F.normalize(torch.randn(n, P, generator=g), dim=-1)
    h_t = F.normalize(torch.randn(n, P, generator=g), dim=-1)
    labels_i = torch.randint(0, KC, (n,), generator=g)
    labels_t = torch.randint(0, KC, (n,), generator=g)
    rows = slice(rank * local, (rank + 1) * local)
    leaves = {key: full[key][rows].clone().requires_grad_(True) for key in ("image", "text", "neg")}
    hi, ht = h_i[rows].clone().requires_grad_(True), h_t[rows].clone().requires_grad_(True)
    f = Features(
        image=leaves["image"],
        text=leaves["text"],
        scale=torch.tensor(9.0),
        neg_text=leaves["neg"],
        neg_mask=full["mask"][rows],
        teacher_image=full["t_image"][rows],
        teacher_text=full["t_text"][rows],
        teacher_neg_text=full["t_neg"][rows],
        proto=_proto_inputs(hi, ht, rows, labels_i, labels_t, 3.0),
    )
    out = Objective(terms, rank=rank, world_size=world, local_loss=local_loss, **extra)(f)
    out["loss"].backward()
    # DDP/DeepSpeed average gradients over ranks: the share of this rank's rows is grad / world.
    leaves.update(hi=hi, ht=ht)
    grads = {key: torch.zeros_like(t) if t.grad is None else t.grad / world for key, t in leaves.items()}
    values = {key: v.detach().clone() for key, v in out.items()}
    return values, grads


def _worker(rank, world, port, results_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = []
    for terms, extra in CASES:
        for local_loss in (False, True):
            values, grads = _run_case(terms, extra, local_loss, rank, world)
            for v in values.values():
                dist.all_reduce(v)
                v /= world  # the logged value: mean over ranks
            results.append((values, grads))
    torch.save(results, os.path.join(results_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_ranks_equal_one_rank_with_twice_the_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    i = 0
    for terms, extra in CASES:
        for local_loss in (False, True):
            single_values, single_grads = _run_case(terms, extra, local_loss, 0, 1)
            for r in range(2):
                values, grads = ranks[r][i]
                for name, v in single_values.items():
                    assert v.item() == pytest.approx(values[name].item(), abs=1e-5), (terms, local_loss, name)
                rows = slice(r * B, (r + 1) * B)
                for key, g in grads.items():
                    assert torch.allclose(g, single_grads[key][rows], atol=1e-5), (terms, local_loss, key, r)
            i += 1


def test_neighbour_rows_are_a_permutation_every_term_is_blind_to():
    """With hard-negative images each rank appends its samples' neighbours after its own rows, so two
    ranks gather [own_0; nb_0; own_1; nb_1] where one process holds [own; nb]: a permutation of the
    same rows. Every term is invariant to it (loss and each row's gradient); with the 2-rank = 1-rank
    test above this gives the trainer's equality for neighbours too."""
    from vlp.train.step import with_neighbours

    f = features(8, K, seed=11, grad=False)
    own, nb = slice(0, 4), slice(4, 8)
    one_process = [torch.cat([f[key][own], f[key][nb]]) for key in ("image", "text", "neg", "mask")]
    order = torch.tensor([0, 1, 4, 5, 2, 3, 6, 7])  # rank 0: own 0-1, nb 0-1; rank 1: own 2-3, nb 2-3
    two_ranks = [t[order] for t in one_process]
    for terms in ({"clip": 1.0}, {"dcl": 1.0}, {"negclip": 1.0}, {"negclip": 1.0, "igc": 0.1}):
        results = []
        for image, text, neg, mask in (one_process, two_ranks):
            leaves = [t.clone().requires_grad_(True) for t in (image, text, neg)]
            loss = Objective(terms)(Features(*leaves[:2], S2, neg_text=leaves[2], neg_mask=mask))["loss"]
            loss.backward()
            results.append((loss.item(), [t.grad for t in leaves]))
        (a, grads_a), (b, grads_b) = results
        assert a == pytest.approx(b, abs=1e-6), terms
        for ga, gb in zip(grads_a, grads_b, strict=True):
            assert (ga is None) == (gb is None), terms
            assert ga is None or torch.allclose(ga[order], gb, atol=1e-6), terms
    # The batch the trainer builds: neighbours after the samples, negatives and masks alike.
    batch = {"image": torch.zeros(2, 3), "text": torch.ones(2, 5), "neg_text": torch.ones(2, 4, 5), "key": ["a", "b"]}
    batch.update(neighbour_image=torch.ones(2, 3), neighbour_text=2 * torch.ones(2, 5))
    batch.update(neighbour_neg_text=3 * torch.ones(2, 4, 5))
    merged = with_neighbours(batch)
    assert merged["image"].tolist() == [[0] * 3] * 2 + [[1] * 3] * 2 and merged["neg_text"].shape == (4, 4, 5)
    assert merged["text"][2:].eq(2).all() and merged["key"] == ["a", "b"]
