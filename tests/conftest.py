"""Shared fixtures."""

from pathlib import Path

import pytest
import torch
from scripts import load_script  # tests/scripts.py

from san_ext.data import make_digits_dataset


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads spin-wait and run the convs several x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64():
    """torch's default dtype float64 inside the test: comparisons against numpy/scipy and between two code paths in
    double precision (Adam maps a near-zero gradient g to about lr * g / (|g| + eps), so float32 rounding of such a
    gradient moves a parameter by up to ~lr, which no float32 tolerance could tell from a bug)."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(scope='module')
def train_cli():
    """``train.py``'s click command, loaded from the repository root."""
    return load_script('train').main


@pytest.fixture(scope='module')
def digits16(tmp_path_factory) -> Path:
    """The built-in digits as a 16x16 labelled dataset zip (one per test module)."""
    return make_digits_dataset(tmp_path_factory.mktemp('data') / 'digits16.zip', resolution=16)
