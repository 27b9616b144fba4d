"""Importing this package registers every processor."""

from minimmf.datasets.processors import (  # noqa: F401
    bert_processors,
    image_processors,
    processors,
    video_processors,
)
