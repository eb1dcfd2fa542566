"""san_ext.images: one [-1, 1] -> uint8 conversion for the loop's grids, gen_images.py, the metrics and the studies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from san_ext import images
from san_ext.metrics import sampling
from san_ext.studies import digits_eval


def test_to_uint8_is_stylegans_rounding():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 0.999, 1.0, 2.0])
    expected = np.clip(x.numpy().astype(np.float32) * 127.5 + 128, 0, 255).astype(np.uint8)  # truncation, as upstream
    out = images.to_uint8(x)
    assert out.dtype == torch.uint8 and out.tolist() == expected.tolist() == [0, 0, 64, 128, 191, 255, 255, 255]


def test_to_uint8_rgb_repeats_grey_and_refuses_other_shapes():
    grey = torch.linspace(-1, 1, 2 * 4 * 4).view(2, 1, 4, 4)
    rgb = images.to_uint8_rgb(grey)
    assert rgb.shape == (2, 3, 4, 4) and all(torch.equal(rgb[:, i], images.to_uint8(grey)[:, 0]) for i in range(3))
    for bad in (torch.zeros(2, 2, 4, 4), torch.zeros(3, 4, 4)):
        with pytest.raises(ValueError, match=r'\[N, 1 or 3, H, W\]'):
            images.to_uint8_rgb(bad)


def test_metrics_and_studies_use_the_one_conversion():
    assert sampling.to_uint8_rgb is images.to_uint8_rgb
    x = torch.randn(3, 1, 8, 8).clamp(-1.2, 1.2)
    assert torch.equal(digits_eval.to_uint8(x), images.to_uint8_rgb(x))


def test_generate_batches_g_and_converts_to_numpy_uint8():
    class G(torch.nn.Module):
        img_channels, img_resolution = 1, 4

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, z, c, truncation_psi=1.0):
            return torch.tanh(self.w * z[:, :16]).view(-1, 1, 4, 4) * truncation_psi

    g, z = G(), torch.randn(5, 16)
    out = images.generate(g, z, None, batch=2, truncation_psi=0.5)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (5, 1, 4, 4)
    assert np.array_equal(out, images.to_uint8(g(z, None, truncation_psi=0.5)).numpy())
    assert images.generate(g, z[:0], None).shape == (0, 1, 4, 4)


def test_z_from_seed_and_grid_latents_are_fixed_by_their_seed():
    assert torch.equal(images.z_from_seed(7, 8), images.z_from_seed(7, 8))
    assert not torch.equal(images.z_from_seed(7, 8), images.z_from_seed(8, 8))
    z, c, grid = images.grid_latents(8, 3, seed=1, cols=2)
    assert grid == (2, 3) and z.shape == (6, 8) and c.argmax(1).tolist() == [0, 0, 1, 1, 2, 2]
