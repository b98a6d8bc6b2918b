"""The photographs the photos corpus is cut from: the real photographs that scikit-image
(``skimage/data``) and scikit-learn (``sklearn/datasets/images``) ship inside their wheels, each with
its package, its path in it and what a caption says it shows, and :class:`Source`, one of them found on
disk. Nothing here imports the packages or reads the files; :func:`~.photos.find_sources` does.
"""

from __future__ import annotations

from dataclasses import dataclass

EXTRA = "pip install 'vlp[bench]'"


@dataclass(frozen=True)
class Photo:
    name: str  # scikit-image's loader function, or scikit-learn's file name without .jpg
    package: str  # the import name of the package that ships it
    path: str  # relative to the package's folder
    subject: str  # what the caption says it shows
    grayscale: bool = False


# Real photographs only: no synthetic image (colorwheel, logo, phantom, chessboard, binary blobs), no
# screenshot (page), no silhouette (horse).
PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "skimage", "data/astronaut.png", "an astronaut in an orange spacesuit in front of a flag"),
    Photo("chelsea", "skimage", "data/chelsea.png", "a tabby cat"),
    Photo("coffee", "skimage", "data/coffee.png", "a cup of coffee on a red saucer on a wooden table"),
    Photo(
        "hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "distant galaxies seen by the Hubble telescope"
    ),
    Photo("immunohistochemistry", "skimage", "data/ihc.png", "stained tissue under a microscope"),
    Photo("motorcycle_left", "skimage", "data/motorcycle_left.png", "a red motorcycle parked in a garage"),
    Photo("motorcycle_right", "skimage", "data/motorcycle_right.png", "a red motorcycle parked in a garage"),
    Photo("retina", "skimage", "data/retina.jpg", "the retina at the back of a human eye"),
    Photo("rocket", "skimage", "data/rocket.jpg", "a rocket on its launch pad at dusk"),
    Photo("china", "sklearn", "datasets/images/china.jpg", "a Chinese pagoda among trees above a lake"),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "an orange dahlia"),
    Photo("camera", "skimage", "data/camera.png", "a man with a camera on a tripod", grayscale=True),
    Photo("coins", "skimage", "data/coins.png", "rows of old coins", grayscale=True),
    Photo("moon", "skimage", "data/moon.png", "the surface of the moon", grayscale=True),
    Photo("brick", "skimage", "data/brick.png", "a brick wall", grayscale=True),
    Photo("grass", "skimage", "data/grass.png", "grass", grayscale=True),
    Photo("gravel", "skimage", "data/gravel.png", "gravel", grayscale=True),
    Photo("text", "skimage", "data/text.png", "handwritten text on paper", grayscale=True),
)
PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}  # import name -> distribution name


class MissingExtraError(RuntimeError):
    """scikit-image or scikit-learn (the ``bench`` extra) is not installed, or lacks a photograph."""


@dataclass(frozen=True)
class Source:
    photo: Photo
    file: str  # absolute path
    size: tuple[int, int]
    sha256: str
