"""Shared fixtures: tiny model sizes so the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os

import pytest
import torch

from tsprune.runtime import available_cores

# At most 2 threads, and no more than the cores this process may use (`taskset -c 1 make test` runs on one).
torch.set_num_threads(min(2, available_cores()))

# Small enough for seconds-long tests, big enough to exercise every code path (heads > 1, several layers).
TINY = {"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 2, "d_layers": 1, "modes": 8, "seg_len": 12,
        "n_routers": 3}

# Device for model tests; CI on a GPU machine can run `TSPRUNE_TEST_DEVICE=cuda make test`.
DEVICE = os.environ.get("TSPRUNE_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module (restored afterwards): tiny tensors gain nothing from a second
    thread, and on a busy 2-core machine its OpenMP barriers make each op many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)


def random_inputs(config, batch: int = 2, seed: int = 0, device: str = DEVICE) -> tuple[torch.Tensor, ...]:
    """Random ``(x_enc, x_mark_enc, x_dec, x_mark_dec)`` shaped for ``config``, reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    dec_len = config.label_len + config.pred_len
    shapes = [(batch, config.seq_len, config.enc_in), (batch, config.seq_len, config.n_time_features),
              (batch, dec_len, config.dec_in), (batch, dec_len, config.n_time_features)]
    return tuple(torch.randn(*shape, generator=gen).to(device) for shape in shapes)


def write_csv(path, frame) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def write_small_csv(folder):
    """``folder/small.csv``: 400 hourly rows of three smooth channels, fast to train on and to evaluate over every
    window (the sweep tests' data)."""
    import numpy as np
    import pandas as pd

    t = np.arange(400)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=400, freq="h").astype(str),
                          "a": np.sin(t / 12) + 0.1 * np.random.default_rng(0).standard_normal(400),
                          "b": np.cos(t / 24), "OT": np.sin(t / 6)})
    path = folder / "small.csv"
    frame.to_csv(path, index=False)
    return path


def table_shape(shape: str, **dims: int) -> tuple[int, ...]:
    """A shape as ``models.base.MODEL_INPUTS`` writes it (``"[batch, label_len + pred_len, enc_in]"``) in numbers,
    each dimension name looked up in ``dims``: tests compare real tensors with the table this way."""
    inner = shape.removeprefix("[").removesuffix("]")
    return tuple(sum(dims[name] for name in dim.split(" + ")) for dim in inner.split(", "))
