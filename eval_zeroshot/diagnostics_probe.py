"""The linear probe: a multinomial logistic regression fitted on frozen features, its weight decay chosen
on a seeded held-out share of the train part, scored on the test part with Wilson's interval. Fits run
full batch with LBFGS from zero (deterministic), on one thread, over the classes present, and in the
train rows' span when there are more features than rows (the same predictions, far fewer flops).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from vlp.common.intervals import wilson

WEIGHT_DECAYS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
VALIDATION_SHARE = 0.2
LBFGS_MAX_ITER = 200


def _standardiser(x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant feature becomes 0, not inf
    return lambda v: (v - mean) / std


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float) -> Callable:
    """Multinomial logistic regression, full batch LBFGS from zero (hence deterministic);
    loss = mean cross-entropy + weight_decay / 2 * |W|^2 (the bias is not penalised)."""
    w = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=LBFGS_MAX_ITER,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay / 2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda v: (v @ w + b).argmax(1)


def _fit_present(x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> Callable:
    """:func:`_fit_logistic` over the classes present in ``y`` only: a class never seen cannot be
    predicted anyway, and its logit, pushed towards minus infinity, keeps LBFGS from converging (on the
    colour target, where orange is never first: 213 evaluations instead of 98 at weight decay 1)."""
    classes = torch.unique(y)
    predict = _fit_logistic(x, torch.searchsorted(classes, y), len(classes), weight_decay)
    return lambda v: classes[predict(v)]


def _row_space(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The features in coordinates of the train rows' span, when there are more features than rows.

    An L2-penalised linear model's optimal weights lie in the span of its training rows (representer
    theorem), for the whole train part and for any subset of it, and the penalty is the same in
    orthonormal coordinates: fitting on ``Z = X Q`` (Q an orthonormal basis of the span, from the QR
    decomposition X^T = Q R, so Z = R^T) gives the same predictions as fitting on ``X``, with N instead of
    D columns (4096 or 12480 -> 2000: several times fewer flops per LBFGS step). A direction the rows do
    not span (a constant feature map spans none) gives a zero column, which carries nothing.
    """
    if x_train.shape[1] <= x_train.shape[0]:
        return x_train, x_test
    q, r = torch.linalg.qr(x_train.T)
    return r.T.contiguous(), x_test @ q


def probe_features(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the probe is fitted on: standardised with the train part's statistics, then in the train
    rows' span (:func:`_row_space`). Shared by every target and weight decay of one feature set.

    The statistics include the rows held out for choosing the decay: they are unsupervised (no label
    is seen), and sharing them lets every fit use one reduction."""
    scale = _standardiser(x_train)
    return _row_space(scale(x_train), scale(x_test))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the LBFGS fits on one thread: each step is a few small ops (at most 2000 x 2000 x classes),
    and on a busy CPU every op split over two threads waits for the other (measured on 2 shared cores:
    20 ms instead of 0.08 ms per loss-and-gradient of a 30-row probe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@_one_thread()  # a fresh context per call: the fits run on one thread whoever calls
def fit_and_score(
    z_train: torch.Tensor,
    y_train: torch.Tensor,
    z_test: torch.Tensor,
    y_test: torch.Tensor,
    seed: int,
    weight_decays: Sequence[float],
) -> dict:
    """:func:`linear_probe` on features :func:`probe_features` already prepared: relation_probe prepares
    each feature set once and fits it for every target."""
    perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(len(y_train) * VALIDATION_SHARE)))
    fit, val = perm[n_val:], perm[:n_val]
    val_accuracy = {}
    for wd in weight_decays:
        predict = _fit_present(z_train[fit], y_train[fit], wd)
        val_accuracy[wd] = (predict(z_train[val]) == y_train[val]).float().mean().item()
    best = max(weight_decays, key=lambda wd: (val_accuracy[wd], wd))
    predict = _fit_present(z_train, y_train, best)
    correct = int((predict(z_test) == y_test).sum())
    lo, hi = wilson(correct, len(y_test))
    return {
        "accuracy": correct / len(y_test),
        "correct": correct,
        "n": len(y_test),
        "ci95": [lo, hi],
        "weight_decay": best,
        "val_accuracy": {str(wd): acc for wd, acc in val_accuracy.items()},
    }


def linear_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    seed: int = 0,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
) -> dict:
    """A multinomial logistic probe: features prepared by :func:`probe_features`; fitted with each weight
    decay on the train part less a seeded ``VALIDATION_SHARE`` held out; the decay with the best held-out
    accuracy kept (a tie goes to the stronger decay); refitted on the whole train part; scored on the
    test part. ``{accuracy, correct, n, ci95 (Wilson), dims, weight_decay, val_accuracy}``."""
    z_train, z_test = probe_features(x_train, x_test)
    return {"dims": int(x_train.shape[1]), **fit_and_score(z_train, y_train, z_test, y_test, seed, weight_decays)}
