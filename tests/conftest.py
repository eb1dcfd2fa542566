"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads spin-wait and run the convs several x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
