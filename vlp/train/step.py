"""One optimizer step: features for the objective, then the plain or the feature-cached accumulated step.

With one micro-batch: forward, objective, backward. With k > 1 the contrastive gradient of the whole
batch is made exact by feature caching: every micro-batch is embedded once without gradient, then
again with gradient, and each time the objective is computed over all cached features with that
micro-batch's live ones in their place; the backward passes add up to the gradient of the loss over
the k·B samples (parameters used directly by the loss, the logit scales, take their gradient from the
last pass only). A non-finite loss or gradient never reaches the weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from data_pipelines.loader.jpeg import images_to

from ..ema import EMATeacher
from ..objectives import Features, Objective, concat_features
from ..objectives.registry import TEACHER_ALL
from ..protoclip.episode import Episodes
from .engine import Engine
from .fault_seams import TrainHooks


def with_neighbours(batch: dict) -> dict:
    """NegCLIP's batch: each sample's neighbour (hard-negative image, its caption, its negatives) joins
    as an extra row after the B samples, so every term sees 2B rows and the hard images take part in
    both contrast directions: as rows of image→text and as columns of text→image."""
    merged = dict(batch)
    for name in ("image", "text", "neg_text", "neg_mask"):
        if name in batch:
            merged[name] = torch.cat([batch[name], batch[f"neighbour_{name}"]])
    return merged


class Stepper:
    def __init__(
        self,
        engine: Engine,
        objective: Objective,
        teacher: EMATeacher | None = None,
        episodes: Episodes | None = None,
        hooks: TrainHooks | None = None,
        neighbours: bool = False,
    ):
        self.engine, self.objective, self.teacher, self.episodes = engine, objective, teacher, episodes
        self.hooks = hooks or TrainHooks()
        self.neighbours = neighbours

    def images(self, batch: dict) -> torch.Tensor:
        """The batch's images on the device in the engine's dtype: uint8 batches (data.decoder=fast)
        are scaled and normalised there, JPEG batches (device) decoded there."""
        return images_to(batch["image"], self.engine.device, self.engine.input_dtype, batch.get("image_normalize"))

    def inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in the engine's dtype; captions, then (when a term needs them) the negatives
        flattened after them: [B positives ; B·K negatives], negative (b, k) at B + b·K + k."""
        device = self.engine.device
        images = self.images(batch)
        texts = batch["text"].to(device, non_blocking=True)
        if self.objective.needs_negatives:
            neg = batch["neg_text"].to(device, non_blocking=True)
            texts = torch.cat([texts, neg.reshape(-1, neg.shape[-1])])
        return images, texts

    def embed(self, batch: dict) -> dict[str, torch.Tensor]:
        """The model's outputs for a batch in eval mode without gradient (ProtoCLIP's episode replay)."""
        device = self.engine.device
        images = self.images(batch)
        self.engine.model.eval()
        with torch.no_grad(), self.engine.autocast():
            return self.engine.model(image=images, text=batch["text"].to(device, non_blocking=True))

    def features(self, batch: dict, images, texts, out: dict, cached: Features | None = None) -> Features:
        """The objective's inputs: this batch's features, its negatives, the teacher's, ProtoCLIP's.
        ``cached``: features already computed for this batch, whose teacher part is reused."""
        b = images.shape[0]
        text = out["text_features"].float()
        f = Features(image=out["image_features"].float(), text=text[:b], scale=out["logit_scale"].float())
        k = batch["neg_text"].shape[1] if self.objective.needs_negatives else 0
        if k:
            f.neg_text = text[b:].reshape(b, k, -1)
            f.neg_mask = batch["neg_mask"].to(images.device)
        if cached is not None:
            f.teacher_image, f.teacher_text = cached.teacher_image, cached.teacher_text
            f.teacher_neg_text = cached.teacher_neg_text
        elif self.teacher is not None:
            everything = TEACHER_ALL in self.objective.needs
            with torch.no_grad(), self.engine.teacher_autocast():
                t = self.teacher(image=images.float(), text=texts if everything else texts[:b])
            f.teacher_text = t["text_features"][:b].float()
            if everything:
                f.teacher_image = t["image_features"].float()
                if k:
                    f.teacher_neg_text = t["text_features"][b:].float().reshape(b, k, -1)
        if self.episodes is not None:
            f.proto = self.episodes.inputs(batch["key"], out)
        return f

    def _forward(self, batch: dict, images, texts, cached: Features | None = None) -> Features:
        with self.engine.autocast():
            out = self.engine.model(image=images, text=texts)
        return self.features(batch, images, texts, out, cached)

    def _plain(self, batch: dict) -> tuple[dict, torch.Tensor, Callable[[int], torch.Tensor]]:
        f = self._forward(batch, *self.inputs(batch))
        losses = self.objective(f)
        return losses, f.scale, lambda _j: losses["loss"]

    def _accumulated(self, micro: list[dict]) -> tuple[dict, torch.Tensor, Callable[[int], torch.Tensor]]:
        inputs = [self.inputs(b) for b in micro]
        rng, cached = [], []
        with torch.no_grad():
            for batch, (images, texts) in zip(micro, inputs, strict=True):
                rng.append(torch.random.get_rng_state())
                cached.append(self._forward(batch, images, texts))
        losses = self.objective(concat_features(cached))

        def loss_for(j: int) -> torch.Tensor:
            torch.random.set_rng_state(rng[j])  # the same dropout, if any, as the cached pass
            live = self._forward(micro[j], *inputs[j], cached=cached[j])
            parts = [live if i == j else cached[i] for i in range(len(micro))]
            # The scale's gradient comes from one pass, the last: DDP synchronises on that one and
            # expects every parameter to take part in it.
            last = j == len(micro) - 1
            return self.objective(concat_features(parts, scale_from=j if last else None))["loss"]

        return losses, cached[0].scale, loss_for

    def __call__(self, micro: list[dict], step: int) -> tuple[dict[str, torch.Tensor], bool | torch.Tensor]:
        """One optimizer step over this rank's micro-batches; returns the logged values (on the device)
        and whether the step reached the weights (a host bool, or a 0-dim bool tensor on the device).
        Nothing here reads the device from the host or talks to the other ranks beyond the engine."""
        self.engine.model.train()
        if self.neighbours:
            micro = [with_neighbours(b) for b in micro]
        losses, scale, loss_for = self._plain(micro[0]) if len(micro) == 1 else self._accumulated(micro)
        loss = self.hooks.loss(step, losses["loss"])
        # A non-finite loss must not reach the weights. Rather than read it on the host (a sync, and an
        # agreement between ranks, before every backward), every pass's loss is multiplied by NaN when
        # it is not finite: the gradients then are too, on every rank once they are reduced, and the
        # step is skipped by the same gradient check as a non-finite gradient (weights and optimizer
        # state untouched).
        poison = torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))
        with self.hooks.backward(step, self.engine.unwrapped):
            applied = self.engine.backward_and_step(lambda j: loss_for(j) * poison, len(micro))
        # A skipped step left the weights as they were: clamping them again changes nothing.
        self.engine.clamp_logit_scales(self.engine.unwrapped.logit_scales())
        if self.teacher is not None:
            self.teacher.update(self.engine.unwrapped, applied)
        values = {k: v.detach() for k, v in losses.items()}
        values["loss"] = loss.detach()
        values["logit_scale"] = scale.detach().reshape(())  # the scale this step used (any ZeRO stage)
        return values, applied
