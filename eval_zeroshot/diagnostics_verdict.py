"""The diagnosis's verdict: which tower is blind to the relation, read from the text cosines of the
``replace_rel`` subset and the relation probe's accuracies by the rule in
:mod:`eval_zeroshot.diagnostics`' docstring (thresholds ``TEXT_BLIND_COSINE`` and ``IMAGE_MARGIN``), as
flags, a fault and one sentence.
"""

from __future__ import annotations

TEXT_BLIND_COSINE = 0.99
IMAGE_MARGIN = 0.05
RELATION_SUBSET = "replace_rel"


def _carries(probe: dict, chance: float) -> bool | None:
    if "ci95" not in probe:
        return None
    return probe["ci95"][0] > chance + IMAGE_MARGIN


def relation_subset(text: dict[str, dict]) -> str | None:
    """The subset the verdict reads: ``replace_rel`` if present, else the first ``*/replace_rel``."""
    if RELATION_SUBSET in text:
        return RELATION_SUBSET
    return next((k for k in text if k.endswith("/" + RELATION_SUBSET)), None)


def verdict(text: dict[str, dict], probe: dict, compositional: dict[str, dict] | None = None) -> dict:
    """Apply the rule of :mod:`eval_zeroshot.diagnostics`; returns the flags, the fault and a one-paragraph sentence."""
    rel = probe["targets"]["relation"]
    chance = rel["chance"]
    spatial = _carries(rel["spatial"], chance)
    pooled = _carries(rel["pooled"], chance)
    image_carries = bool(spatial) or bool(pooled)
    subset = relation_subset(text)
    cos = text[subset]["mean"] if subset else None
    text_blind = None if cos is None else cos > TEXT_BLIND_COSINE

    def acc(p: dict) -> str:
        return f"{p['accuracy']:.2f}" if "accuracy" in p else "unavailable"

    image_part = (
        f"image features {'carry' if image_carries else 'do not carry'} the relation "
        f"(spatial probe {acc(rel['spatial'])}, pooled {acc(rel['pooled'])}, chance {chance:.2f})"
    )
    if text_blind is None:
        text_part = "no replace_rel subset to test the text tower on"
        fault = "image" if not image_carries else "unknown"
    else:
        score = ""
        if compositional and subset in compositional:
            score = f", accuracy {100 * compositional[subset]['accuracy']:.1f}%"
        text_part = f"text tower {'blind' if text_blind else 'not blind'} to {subset} (cosine {cos:.4f}{score})"
        if text_blind:
            fault = "text" if image_carries else "both"
        elif not image_carries:
            fault = "image"
        elif not pooled:
            fault = "image pooling"
        else:
            fault = "alignment"
    conclusion = {
        "text": "the text tower is at fault",
        "both": "both towers are blind to it",
        "image": "the image tower is at fault",
        "image pooling": "the image tower's pooling drops it (it is there before pooling, not in the embedding)",
        "alignment": "both towers separate it: the alignment is at fault",
        "unknown": "the text side is untested",
    }[fault]
    sentence = f"{text_part}; {image_part}: {conclusion}."
    others = [k for k, v in text.items() if k != subset and v["mean"] is not None and v["mean"] > TEXT_BLIND_COSINE]
    if others:
        sentence += f" The text tower is also blind (cosine > {TEXT_BLIND_COSINE}) to: {', '.join(others)}."
    colour = probe["targets"]["colour"]
    best = max((colour[k]["accuracy"] for k in ("spatial", "pooled") if "accuracy" in colour[k]), default=None)
    if best is not None and not any(_carries(colour[k], colour["chance"]) for k in ("spatial", "pooled")):
        sentence += f" Caution: not even the sanity target (colour, best probe {best:.2f}) is probe-able."
    return {
        "subset": subset,
        "text_cosine": cos,
        "text_blind": text_blind,
        "spatial_carries": spatial,
        "pooled_carries": pooled,
        "image_carries": image_carries,
        "fault": fault,
        "sentence": sentence,
        "rule": {"text_blind_cosine": TEXT_BLIND_COSINE, "image_margin": IMAGE_MARGIN},
    }
