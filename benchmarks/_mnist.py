"""MNIST-format IDX data for every benchmark: one reader, one directory rule.

The data directory is ``--data-dir`` where a script has it, else the
environment variable ``AMC_JAX_DATA_DIR``, else
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
It holds the standard files ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, gzipped (``.gz``) or not. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct

import numpy as np

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DATA_DIR_ENV = "AMC_JAX_DATA_DIR"


def data_dir(arg: "pathlib.Path | None") -> pathlib.Path:
  """``--data-dir`` if given, else ``$AMC_JAX_DATA_DIR``, else the Debian path."""
  if arg is not None:
    return pathlib.Path(arg)
  return pathlib.Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def read_idx(path: "str | os.PathLike") -> np.ndarray:
  """Reads one IDX file (gzipped or not) of unsigned bytes into an array."""
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    header = f.read(4)
    if len(header) != 4:
      raise ValueError(f"{path}: too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", header)
    if zero != 0 or dtype_code != 0x08 or ndim < 1:
      raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {header.hex()})")
    dims = f.read(4 * ndim)
    if len(dims) != 4 * ndim:
      raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
    shape = struct.unpack(">" + "I" * ndim, dims)
    data = f.read()
  if len(data) != int(np.prod(shape)):
    raise ValueError(f"{path}: header says shape {shape} ({int(np.prod(shape))} bytes), "
                     f"file has {len(data)} bytes of data")
  return np.frombuffer(data, np.uint8).reshape(shape)


def write_idx(path: "str | os.PathLike", array: np.ndarray) -> None:
  """Writes ``array`` (uint8) as an IDX file, gzipped if the name ends in .gz."""
  path = pathlib.Path(path)
  array = np.ascontiguousarray(array, np.uint8)
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "wb") as f:
    f.write(header + array.tobytes())


def _find(directory: pathlib.Path, stem: str) -> pathlib.Path:
  for name in (stem + ".gz", stem):
    if (directory / name).exists():
      return directory / name
  raise FileNotFoundError(
      f"no {stem}(.gz) in {directory}: pass --data-dir or set ${DATA_DIR_ENV} to a directory "
      f"of MNIST-format IDX files (on Debian: apt-get install dataset-fashion-mnist)")


def load_mnist(directory: "str | os.PathLike", split: str) -> tuple[np.ndarray, np.ndarray]:
  """Images ``uint8 [n, 28, 28]`` and labels ``uint8 [n]`` of ``split``.

  ``split`` is ``"train"`` or ``"test"`` (files ``train-*`` and ``t10k-*``).
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  directory = pathlib.Path(directory)
  prefix = "train" if split == "train" else "t10k"
  images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
  labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise ValueError(f"{directory}: {split} images {images.shape} and labels {labels.shape} "
                     "do not match")
  return images, labels




def training_images(directory: "str | os.PathLike", n: int) -> tuple[np.ndarray, np.ndarray, str]:
  """The first ``n`` training images, flattened to [n, 784] in [0, 1], and labels.

  For the speed benchmarks, which measure time, not accuracy: when the IDX
  files are absent they get random data of the same shape instead, and the
  returned description says which it was.
  """
  directory = pathlib.Path(directory)
  try:
    images, labels = load_mnist(directory, "train")
  except FileNotFoundError:
    rng = np.random.default_rng(0)
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y, f"random data of the Fashion-MNIST shape (no IDX files in {directory})"
  x = images[:n].reshape(-1, 784).astype(np.float32) / 255.0
  return x, labels[:n].astype(np.int64), f"Fashion-MNIST training images ({directory}), first {len(x)}"
