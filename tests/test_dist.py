"""san_ext.dist in one process: rank 0 of 1, collectives are identities, seeds depend on every key.

The collectives over several processes are exercised by the metrics' two-rank gloo test (tests/test_metrics.py)."""

from __future__ import annotations

import numpy as np
import torch

from san_ext import dist
from san_ext.metrics import sampling


def test_one_process_is_rank_0_of_1_and_collectives_are_identities(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    env = dist.init('cpu')
    assert (env.rank, env.world_size, env.is_main, env.device) == (0, 1, True, torch.device('cpu'))
    assert not dist.active() and (dist.rank(), dist.world_size(), dist.shard_range(7)) == (0, 1, (0, 7))
    x = torch.arange(6.0).view(3, 2)
    assert dist.all_reduce_sum(x) is x and dist.all_reduce_mean(x) is x and dist.all_gather_rows(x) is x
    assert dist.broadcast_object({'a': 1}) == {'a': 1}
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([float('nan'), float('inf'), -float('inf')])
    dist.all_reduce_grads([p])
    assert p.grad.tolist() == [0.0, 1e5, -1e5]


def test_seed_for_depends_on_every_key_through_seedsequence():
    state = np.random.SeedSequence([3, 1]).generate_state(2, dtype=np.uint32)
    assert dist.seed_for(3, 1) == (int(state[0]) << 31 ^ int(state[1])) & ((1 << 63) - 1)
    seeds = {dist.seed_for(0, n, k) for n in range(4) for k in range(4)}
    assert len(seeds) == 16 and all(0 <= s < 2 ** 63 for s in seeds)


def test_metric_latents_draw_each_block_from_seed_for():
    z, _ = sampling.latents(5, 0, 3, z_dim=4, c_dim=0)
    gen = torch.Generator().manual_seed(dist.seed_for(5, 0))
    assert torch.equal(z, torch.randn(sampling.LATENT_BLOCK, 4, generator=gen)[:3])
