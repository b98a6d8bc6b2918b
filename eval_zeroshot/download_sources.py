"""Where each compositional benchmark's files come from and what they are checked against: per file its
official location, its place under the download folder (and under a mirror), its size and sha256 where
known, whether it is a zip to unpack, and what to do by hand when it has no public download. No checksum
here is invented: only SugarCrepe's seven JSON files have one (see :mod:`eval_zeroshot.download`).
"""

from __future__ import annotations

from dataclasses import dataclass

# SugarCrepe's files at the commit that last changed data/ (same bytes as main as of 2024): a pinned
# URL keeps the checksums below valid if main ever changes.
SUGARCREPE_RAW = "https://raw.githubusercontent.com/RAIVNLab/sugar-crepe/546eb51ecd55859f1d1888636bb9399a8df4cd92/data"
BLIP_BUCKET = "https://storage.googleapis.com/sfr-vision-language-research/datasets"
# ARO's code fetches these with gdown by Google Drive id; this endpoint serves the same id without the
# "cannot scan for viruses" page that large files otherwise get.
GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="


@dataclass(frozen=True)
class Source:
    """One file of a benchmark."""

    dest: str  # path under DIR, and under a mirror
    url: str | None  # official location; None when there is no public download (sign-up)
    sha256: str | None = None  # None: not known (no official copy was at hand to compute it)
    size: int | None = None  # bytes; None: not known
    unpack: str | None = None  # a zip: the folder under DIR that unpacking it yields (then the zip is deleted)
    about: str = ""  # how big, or how to get it by hand

    @property
    def target(self) -> str:
        """What must exist under DIR once this source is in place (the unpacked folder for an archive)."""
        return self.unpack or self.dest

    def checks(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}, {self.size} bytes"
        if self.unpack:
            return "no published checksum; the zip's own CRCs are checked"
        if self.dest.endswith(".json"):
            return "no published checksum; checked to be whole JSON"
        return "no published checksum"


@dataclass(frozen=True)
class Benchmark:
    files: tuple[Source, ...]
    data: str  # the --data to use, under DIR
    images: str  # the --images to use, under DIR
    image_source: Source  # fetched with --with-images (or placed by hand)


def _sugarcrepe(name: str, size: int, sha256: str) -> Source:
    return Source(f"sugarcrepe/{name}.json", f"{SUGARCREPE_RAW}/{name}.json", sha256, size)


COCO_VAL2017 = Source(
    "coco/val2017.zip", "http://images.cocodataset.org/zips/val2017.zip", unpack="coco/val2017", about="about 0.8 GB"
)
COCO_VAL2014 = Source(  # the Karpathy test images are all from val2014 (ARO also fetches test2014, unused)
    "coco/val2014.zip", "http://images.cocodataset.org/zips/val2014.zip", unpack="coco/val2014", about="about 6 GB"
)
ARO_IMAGES = Source(
    "aro/vgr_vga_images.zip", GDRIVE + "1qaPlrwhGNMrR3a11iopZUT_GPP_LrgP9", unpack="aro/images", about="about 1 GB"
)
FLICKR_IMAGES = Source(
    "flickr30k/flickr30k-images",
    None,
    about="no public download: sign up at https://forms.illinois.edu/sec/229675 and unpack the images there",
)

BENCHMARKS: dict[str, Benchmark] = {
    "sugarcrepe": Benchmark(
        files=(
            _sugarcrepe("add_att", 158863, "012d88d729693d193760e6f3393b06a1cf874380a9db0062e937201199fe044d"),
            _sugarcrepe("add_obj", 484593, "1b9d76b93139a937b8dc1ada92a4f05ecc821bb3c291d752428bafadd4bb0682"),
            _sugarcrepe("replace_att", 176843, "9fe55fd4c0a9ad1f85d486d9f6d0215b41f867eb025026e7f7b5ce44352545ee"),
            _sugarcrepe("replace_obj", 361126, "9d299600639947e9d15281a9ded1382b376cf4ea088a8d08a1314bfe76e81898"),
            _sugarcrepe("replace_rel", 312629, "356bcc2fc4c6aed3f4d9fd50acc58489bb1fe70c28791f9368d4cbf9ea39cdc9"),
            _sugarcrepe("swap_att", 154665, "7a7ce04e5c4c80412b48c6f0c1347fb1a2f5d54c0be6aa429b64d390e442f8d0"),
            _sugarcrepe("swap_obj", 57569, "073cdb8e253d053614e80710834d9773b09dbc1dd0a412f6f9492262caa1dcad"),
        ),
        data="sugarcrepe",
        images="coco/val2017",
        image_source=COCO_VAL2017,
    ),
    "aro-vgr": Benchmark(
        files=(Source("aro/visual_genome_relation.json", GDRIVE + "1kX2iCHEv0CADL8dSO1nMdW-V0NqIAiP3"),),
        data="aro/visual_genome_relation.json",
        images="aro/images",
        image_source=ARO_IMAGES,
    ),
    "aro-vga": Benchmark(
        files=(Source("aro/visual_genome_attribution.json", GDRIVE + "13tWvOrNOLHxl3Rm9cR3geAdHx2qR3-Tw"),),
        data="aro/visual_genome_attribution.json",
        images="aro/images",
        image_source=ARO_IMAGES,
    ),
    "aro-coco-order": Benchmark(
        files=(Source("coco/coco_karpathy_test.json", f"{BLIP_BUCKET}/coco_karpathy_test.json"),),
        data="coco/coco_karpathy_test.json",
        images="coco",  # the file's image paths start with val2014/
        image_source=COCO_VAL2014,
    ),
    "aro-flickr-order": Benchmark(
        files=(Source("flickr30k/flickr30k_test.json", f"{BLIP_BUCKET}/flickr30k_test.json"),),
        data="flickr30k/flickr30k_test.json",
        images="flickr30k",  # the file's image paths start with flickr30k-images/
        image_source=FLICKR_IMAGES,
    ),
}
