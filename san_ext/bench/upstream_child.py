"""Time upstream StyleGAN-XL's stem G and projected D from a user's checkout (run as a script, in its own process).

``python -m san_ext.bench.networks --upstream PATH`` starts this file as ``python upstream_child.py PATH CONFIG_JSON``
so that the checkout's own ``torch_utils``/``training`` packages shadow nothing of ours. It builds the networks as
upstream's ``train.py`` does for ``--cfg stylegan3-t`` (z_dim 64, w_dim 512, 2 mapping layers, channel base/max
doubled, projected D with 4 mini-discs per backbone), with random backbone weights (``timm.create_model`` is asked
for ``pretrained=False`` so nothing downloads), and prints one JSON row per network on stdout, in
``bench.networks``' units. Imports nothing from san_ext. The checkout must import on the current PyTorch (apply
``san-patch apply PATH`` first if it does not).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time


def _median_seconds(fn, device: str, warmup: int, repeats: int) -> float:
    """san_ext.bench.common.median_seconds, restated: this process must not import san_ext (see above)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _offline_timm() -> None:
    """Random backbone weights: the speed does not depend on them, and nothing may download."""
    import timm

    create = timm.create_model

    def create_model(*args, **kwargs):
        kwargs['pretrained'] = False
        return create(*args, **kwargs)

    timm.create_model = create_model


def _networks(cfg: dict, device: str):
    import torch
    from pg_modules.discriminator import ProjectedDiscriminator
    from training.networks_stylegan3_resetting import Generator

    G = Generator(z_dim=64, c_dim=cfg['c_dim'], w_dim=512, img_resolution=cfg['img_resolution'], img_channels=3,
                  mapping_kwargs=dict(rand_embedding=False, num_layers=2), channel_base=2 * cfg['channel_base'],
                  channel_max=2 * cfg['channel_max'], num_layers=cfg['num_layers'],
                  magnitude_ema_beta=0.5 ** (cfg['batch'] / 20e3), conv_kernel=3, use_radial_filters=False,
                  num_fp16_res=cfg.get('num_fp16_res', 4), conv_clamp=256)
    D = ProjectedDiscriminator(backbones=list(cfg['backbones']), diffaug=True, interp224=True,
                               backbone_kwargs=dict(cout=64, expand=True, proj_type=2, num_discs=4,
                                                    cond=int(cfg['c_dim'] > 0)))
    torch.manual_seed(0)
    return G.to(device).train(), D.to(device).train()


def measure(checkout: str, cfg: dict) -> dict:
    import torch

    os.chdir(checkout)  # upstream opens in_embeddings/ relative to the working directory
    sys.path.insert(0, checkout)
    _offline_timm()
    device = cfg['device']
    G, D = _networks(cfg, device)
    n, c_dim = cfg['batch'], cfg['c_dim']
    z = torch.randn(n, 64, device=device)
    c = torch.nn.functional.one_hot(torch.randint(c_dim, (n,)), c_dim).float().to(device)
    with torch.no_grad():
        img = G(z, c).detach()

    def g_step():
        G(z, c).square().mean().backward()

    def d_step():
        logits = D(img, c)  # a list of per-disc logits in some upstream versions, one tensor in others
        logits = torch.cat([x.reshape(-1) for x in logits]) if isinstance(logits, (list, tuple)) else logits
        logits.mean().backward()

    row = dict(stage=cfg['stage'], batch=n, resolution=G.img_resolution, ops='upstream', amp='none',
               g_params_m=sum(p.numel() for p in G.parameters()) / 1e6)
    for name, fn in (('G', g_step), ('D', d_step)):
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        seconds = _median_seconds(fn, device, cfg['warmup'], cfg['repeats'])
        row[f'{name}_img_s'] = n / seconds
        row[f'{name}_peak_gib'] = torch.cuda.max_memory_allocated() / 2 ** 30 if device == 'cuda' else None
    return row


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit('usage: upstream_child.py CHECKOUT CONFIG_JSON')
    sys.stdout.write(json.dumps(measure(os.path.abspath(sys.argv[1]), json.loads(sys.argv[2]))) + '\n')
