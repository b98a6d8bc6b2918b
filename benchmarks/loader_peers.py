"""The peers benchmarks/loader.py times vlp's loader against: a plain webdataset pipeline and open_clip's
own training pipeline, each in a DataLoader's workers; and vlp's fast batches normalised on the CPU."""

from __future__ import annotations

import torch
import webdataset as wds

from data_pipelines.loader.jpeg import images_to


def wds_pipeline(urls, preprocess, tokenizer, batch_size, decode=True):
    def to_pair(sample):
        return preprocess(sample["png"]), sample["txt"]

    def collate(items):
        return {"image": torch.stack([i[0] for i in items]), "text": tokenizer([i[1] for i in items])}

    stages = [wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples()]
    if decode:
        stages.append(wds.shuffle(1000, 100))  # the same buffer as ours
        stages += [wds.decode("pilrgb"), wds.map(to_pair), wds.batched(batch_size, collation_fn=collate)]
    else:
        stages += [wds.batched(batch_size, collation_fn=lambda items: {"n": len(items)})]
    return wds.DataPipeline(*stages)


def wds_peer(urls, preprocess, tokenizer, batch_size: int, workers: int, decode: bool):
    return in_workers(wds_pipeline(urls, preprocess, tokenizer, batch_size, decode), workers)


class Normalised:
    """vlp's fast batches leave ToTensor/Normalize to the training device; this contender pays them on
    the loader's CPU (``images_to``), as a CPU-only run does."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for batch in self.loader:
            images_to(batch["image"], "cpu", normalize=batch.get("image_normalize"))
            yield batch


def open_clip_pipeline(urls, preprocess, tokenizer, batch_size: int):
    """open_clip's training pipeline (open_clip_train/data.py, get_wds_dataset) minus its resampling:
    the same stages, the same shuffle buffer as ours."""
    stages = [
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.shuffle(1000, 100),
        wds.decode("pilrgb", only=["jpg", "jpeg", "png", "webp", "txt"]),  # no pickled members
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=preprocess, text=lambda text: tokenizer(text)[0]),
        wds.to_tuple("image", "text"),
        wds.batched(batch_size, partial=False),
    ]
    return wds.DataPipeline(*stages)


def in_workers(pipe, workers: int):
    return pipe if workers == 0 else torch.utils.data.DataLoader(pipe, batch_size=None, num_workers=workers)


def count_samples(batch) -> int:
    if isinstance(batch, dict):
        return len(batch["key"]) if "key" in batch else batch.get("n", len(batch.get("text", [])))
    return len(batch[1])  # open_clip's (images, texts)
