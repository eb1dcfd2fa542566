"""FD_DINOv2: the DINOv2 extractor against torch-fidelity's forward and DINOv2's position rule, the real ViT-L/14 layout
on the meta device, FD from our streaming statistics against scipy, the registry entries and the offline error.

No downloads: checkpoints are random tensors in the official ``dinov2_vitl14_pretrain.pth`` layout, written from
DINOv2's architecture (facebookresearch/dinov2 ``dinov2/models/vision_transformer.py``), not from timm's names. The
real 300M-parameter shape is only ever built on the meta device; forward passes use a 2-block, 32-wide ViT with the
same patch size, position grid and code path.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from scripts import load_script  # tests/scripts.py
from torch import nn

from san_ext.metrics import (
    DINOV2_VITL14,
    DinoV2Arch,
    MetricOptions,
    StreamingStats,
    WeightsNotFoundError,
    compute_metric,
    get_extractor,
    get_metric,
    register_extractor,
    unregister_extractor,
)
from san_ext.metrics import dinov2 as dinov2_module
from san_ext.metrics.dinov2 import build_dinov2_vit, load_dinov2_state, resample_dinov2_pos_embed
from san_ext.metrics.sampling import generated_images

SMALL = DinoV2Arch('test-small', embed_dim=32, depth=2, num_heads=2)  # ViT-L's patch 14 and 37x37 positions
WEIGHTS_NAME = 'dinov2_vitl14_pretrain.pth'

pytestmark = pytest.mark.usefixtures('one_thread')


def official_state(arch: DinoV2Arch, device: str = 'cpu', seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as DINOv2's released backbone checkpoints (block_chunks=0, LayerScale, MLP)."""
    d, hidden, n_pos = arch.embed_dim, int(arch.embed_dim * arch.mlp_ratio), 1 + arch.pretrain_grid ** 2
    shapes = {'cls_token': (1, 1, d), 'pos_embed': (1, n_pos, d), 'mask_token': (1, d),
              'patch_embed.proj.weight': (d, 3, arch.patch_size, arch.patch_size), 'patch_embed.proj.bias': (d,),
              'norm.weight': (d,), 'norm.bias': (d,)}
    for i in range(arch.depth):
        shapes.update({f'blocks.{i}.norm1.weight': (d,), f'blocks.{i}.norm1.bias': (d,),
                       f'blocks.{i}.attn.qkv.weight': (3 * d, d), f'blocks.{i}.attn.qkv.bias': (3 * d,),
                       f'blocks.{i}.attn.proj.weight': (d, d), f'blocks.{i}.attn.proj.bias': (d,),
                       f'blocks.{i}.ls1.gamma': (d,), f'blocks.{i}.norm2.weight': (d,), f'blocks.{i}.norm2.bias': (d,),
                       f'blocks.{i}.mlp.fc1.weight': (hidden, d), f'blocks.{i}.mlp.fc1.bias': (hidden,),
                       f'blocks.{i}.mlp.fc2.weight': (d, hidden), f'blocks.{i}.mlp.fc2.bias': (d,),
                       f'blocks.{i}.ls2.gamma': (d,)})
    if device == 'meta':
        return {k: torch.empty(s, device='meta') for k, s in shapes.items()}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, s in shapes.items():  # norm scales and LayerScale near 1, everything else small: O(1) activations
        t = torch.randn(s, generator=gen)
        state[k] = 1 + 0.3 * t if k.endswith(('gamma', 'weight')) and len(s) == 1 else 0.1 * t
    state['patch_embed.proj.weight'] *= 0.3
    return state


@pytest.fixture
def small_weights(tmp_path, monkeypatch):
    """A small random DINOv2 checkpoint under the published file name in $SAN_EXT_WEIGHTS, plus a registered
    extractor building it through the registered 'dinov2' factory."""
    torch.save(official_state(SMALL), tmp_path / WEIGHTS_NAME)
    monkeypatch.setenv('SAN_EXT_WEIGHTS', str(tmp_path))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    register_extractor('test-dinov2-small', lambda weights=None: get_extractor('dinov2', weights=weights, arch=SMALL),
                       overwrite=True)
    yield tmp_path
    unregister_extractor('test-dinov2-small')


def uint8_images(n: int, res: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# The network: real layout (meta device), DINOv2's position rule, torch-fidelity's and EDM2's preprocessing.

def test_real_vitl14_checkpoint_layout_loads_and_gives_1024_features_on_meta(monkeypatch):
    state = official_state(DINOV2_VITL14, device='meta')
    assert sum(t.numel() for t in state.values()) == 304_368_640  # DINOv2 ViT-L/14 as released (pos 37x37, mask)
    monkeypatch.setattr(dinov2_module, 'find_weights', lambda spec, explicit=None: f'/nowhere/{spec.name}')
    monkeypatch.setattr(dinov2_module, 'load_state_dict', lambda spec, path: (state, '0' * 64))
    ext = get_extractor('dinov2')  # the registered factory, real architecture, shapes only
    assert (ext.name, ext.dim, ext.resize) == ('dinov2', 1024, 'tf1-bilinear-224')
    assert ext.version.startswith('dinov2-vitl14-lvd142m/')
    vit = ext.net.vit
    assert vit.pos_embed.shape == (1, 1 + 16 * 16, 1024) and len(vit.blocks) == 24
    assert vit.blocks[0].attn.num_heads == 16 and vit.patch_embed.proj.kernel_size == (14, 14)
    images = torch.empty(2, 3, 256, 256, dtype=torch.uint8, device='meta')
    assert ext.to('meta')(images).shape == (2, 1024)


def _bicubic_matrix(n_in: int, n_out: int, scale: float, a: float = -0.75) -> np.ndarray:
    """[n_out, n_in] weights of 1-D bicubic resampling with a given scale factor, align_corners=False, no antialias,
    edge-clamped taps (Keys' kernel as PyTorch uses it): src = (dst + 0.5) / scale - 0.5."""
    def kernel(t: float) -> float:
        t = abs(t)
        if t <= 1:
            return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
        return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a if t < 2 else 0.0

    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) / scale - 0.5
        base = int(np.floor(src))
        for tap in range(base - 1, base + 3):
            m[i, min(max(tap, 0), n_in - 1)] += kernel(src - tap)
    return m


def test_position_embeddings_are_resampled_by_dinov2s_rule():
    rng = np.random.default_rng(0)
    old, new, d = 37, 16, 5
    pos = rng.standard_normal((1, 1 + old * old, d)).astype(np.float32)
    got = resample_dinov2_pos_embed(torch.from_numpy(pos), new).numpy()
    m = _bicubic_matrix(old, new, (new + 0.1) / old)  # DINOv2: scale factor (16 + 0.1) / 37, not the size 16
    grid = pos[0, 1:].reshape(old, old, d).astype(np.float64)
    want = np.einsum('ij,jkc,lk->ilc', m, grid, m).reshape(new * new, d)
    assert got.shape == (1, 1 + new * new, d)
    np.testing.assert_array_equal(got[0, 0], pos[0, 0])  # the class token's position is kept as is
    np.testing.assert_allclose(got[0, 1:], want, rtol=0, atol=1e-5)


def test_extractor_equals_torch_fidelitys_dinov2_forward(small_weights, monkeypatch):
    tfd = pytest.importorskip('torch_fidelity.feature_extractor_dinov2')
    ours = get_extractor('test-dinov2-small')
    monkeypatch.setattr(torch.hub, 'load', lambda *a, **k: ours.net.vit)  # torch-fidelity's only way to the net
    theirs = tfd.FeatureExtractorDinoV2('dinov2-vit-l-14', ['dinov2'])
    for res in (40, 256):  # up- and downsampling to 224
        images = uint8_images(3, res, seed=res)
        out = ours(images)
        assert out.shape == (3, 32) and out.std() > 0.1
        assert torch.equal(out, theirs(images)[0])


def test_edm2_variant_resizes_bicubic_with_antialias(small_weights):
    ext = get_extractor('dinov2_edm2', arch=SMALL)
    images = uint8_images(2, 256, seed=1)
    x = F.interpolate(images.float(), size=(224, 224), mode='bicubic', antialias=True) / 255  # EDM2's DINOv2Detector
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1,
                                                                                                               1)
    with torch.no_grad():
        want = ext.net.vit(x)
    assert ext.resize == 'bicubic-aa-224'
    torch.testing.assert_close(ext(images), want, rtol=1e-4, atol=1e-5)
    assert (ext(images) - get_extractor('dinov2', arch=SMALL)(images)).abs().max() > 1e-3  # the resizes differ


def test_a_checkpoint_of_another_shape_is_refused_naming_the_file(tmp_path):
    other = DinoV2Arch('other', embed_dim=32, depth=3, num_heads=2)
    vit = build_dinov2_vit(SMALL)
    with pytest.raises(ValueError, match='(?s)ckpt.pth is not a DINOv2 test-small checkpoint.*blocks.2'):
        load_dinov2_state(vit, official_state(other), SMALL, source='ckpt.pth')
    wrong_grid = DinoV2Arch('grid', embed_dim=32, depth=2, num_heads=2, pretrain_grid=16)
    with pytest.raises(ValueError, match=r'pos_embed is \[1, 257, 32\], expected \[1, 1370, 32\]'):
        load_dinov2_state(build_dinov2_vit(SMALL), official_state(wrong_grid), SMALL, source='ckpt.pth')


# ---------------------------------------------------------------------------------------------------------------
# FD_DINOv2: streaming statistics against scipy, the registry, the offline error.

class RGBTinyG(nn.Module):
    """Stand-in conditional generator: z [N, 8], one-hot c [N, 3] -> RGB 16x16 images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.z_dim, self.c_dim = 8, 3
        self.fc = nn.Linear(11, 3 * 16 * 16)
        torch.nn.init.normal_(self.fc.weight, std=0.7, generator=torch.Generator().manual_seed(2))

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(torch.cat([z, c], dim=1))).view(-1, 3, 16, 16)


def scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """pytorch-fid's formula on raw features: np.mean, np.cov, scipy.linalg.sqrtm."""
    mu1, mu2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fd_dinov2_from_streaming_stats_equals_scipy_frechet_on_the_same_features(small_weights):
    G, ref_images = RGBTinyG(), uint8_images(50, 16, seed=5)
    data = [(im.numpy(), np.zeros(0, np.float32)) for im in ref_images]
    opts = MetricOptions(num_gen=64, extractor='test-dinov2-small', batch_size=32, num_workers=0, progress=False,
                         seed=3)
    result = compute_metric('fd_dinov2_10k', G, data, opts)
    ext = get_extractor('test-dinov2-small')
    gen = torch.cat([ext(im) for _, im in generated_images(G, 64, 32, seed=3, device='cpu')]).double().numpy()
    ref = ext(ref_images).double().numpy()
    want = scipy_frechet(gen, ref)
    assert want > 0.1  # different distributions: a real distance, far above rounding noise
    assert result.results['fd_dinov2_10k'] == pytest.approx(want, rel=1e-6)
    assert (result.num_gen, result.num_ref, result.extractor) == (64, 50, 'dinov2')
    streamed = StreamingStats(32)
    for chunk in np.array_split(gen.astype(np.float32), 7):  # and in odd chunks straight through the accumulator
        streamed.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(streamed.cov(), np.cov(gen.astype(np.float32).astype(np.float64), rowvar=False),
                               rtol=1e-9, atol=1e-12)


def test_registry_has_fd_dinov2_with_stylegan_counts():
    full, short = get_metric('fd_dinov2_50k_full'), get_metric('fd_dinov2_10k')
    assert (full.kind, full.extractor, full.num_gen, full.max_ref) == ('fid', 'dinov2', 50_000, None)
    assert (short.kind, short.extractor, short.num_gen, short.max_ref) == ('fid', 'dinov2', 10_000, 10_000)


@pytest.mark.parametrize('name', ['dinov2', 'dinov2_edm2'])
def test_missing_dinov2_weights_error_names_the_file_and_where_to_put_it(name, tmp_path, monkeypatch):
    monkeypatch.setenv('SAN_EXT_WEIGHTS', str(tmp_path))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    with pytest.raises(WeightsNotFoundError) as err:
        get_extractor(name)
    message = str(err.value)
    for part in (WEIGHTS_NAME, 'https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth',
                 '$SAN_EXT_WEIGHTS', '$TORCH_HOME/hub/checkpoints', str(tmp_path)):
        assert part in message


def test_calc_metrics_offline_fd_dinov2_fails_naming_the_weight_file(tmp_path, monkeypatch):
    cli = load_script('calc_metrics')
    monkeypatch.setattr(cli, 'load_network', lambda path, device: RGBTinyG())
    monkeypatch.setenv('SAN_EXT_WEIGHTS', str(tmp_path))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    network = tmp_path / 'network-snapshot-000000.safetensors'
    network.write_bytes(b'')
    out = CliRunner().invoke(cli.main, ['--network', str(network), '--data', str(tmp_path), '--metrics',
                                        'fd_dinov2_10k', '--device', 'cpu', '--no-progress'])
    assert out.exit_code != 0 and WEIGHTS_NAME in out.output and 'Traceback' not in out.output
