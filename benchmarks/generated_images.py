"""JPEG files generated on the fly for the input-pipeline benchmarks, and a dataset wrapper counting its reads."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

#: (width, height) of the generated images. SUN397's images are a few hundred pixels a side and larger (the
#: dataset's scenes were kept at >= 200 px); 640 x 480 sits in that range.
SUN397_SIZE = (640, 480)


def write_jpegs(folder: str | Path, n: int, size: tuple[int, int] = SUN397_SIZE, seed: int = 0) -> list[Path]:
    """`n` JPEGs (quality 90) of smooth colour fields with noise, as photos compress: a realistic decode cost."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [127 + 100 * np.sin(x / (20 + 7 * c) + y / (31 + 5 * c) + phase[c]) for c in range(3)]
        pixels = np.stack(channels, -1) + rng.normal(0, 12, (height, width, 3))
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


class CountingDataset(Dataset):
    """`data` with a count of `__getitem__` calls shared by DataLoader worker processes (fork)."""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.reads = multiprocessing.get_context("fork").Value("l", 0)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        with self.reads.get_lock():
            self.reads.value += 1
        return self.data[index]
