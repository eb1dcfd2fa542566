"""The optimizer settings the studies compare, each with its source: ``get_optimizer(name)``.

Optimizer settings (Adam for G and D alike, no weight decay; ``d_steps`` D updates before each G update):

==============  =======  ============  =======  ===================================================================
name            lr       betas         d_steps  source
==============  =======  ============  =======  ===================================================================
san-official    1e-3     (0.0, 0.99)   1        sony/san ``simple-san/hparams/params.json`` (lr, beta1, beta2) and
                                                ``simple-san/train.py`` (one D then one G update per batch)
dcgan           2e-4     (0.5, 0.999)  1        Radford et al. 2016 (DCGAN), Sec. 4: lr 0.0002, beta1 0.5
wgan-gp         1e-4     (0.5, 0.9)    5        Gulrajani et al. 2017 (WGAN-GP), Algorithm 1 defaults
sngan           2e-4     (0.0, 0.9)    5        Miyato et al. 2018 (SNGAN): the ResNet runs' setting, taken from
                                                WGAN-GP's CIFAR-10 ResNet code (n_dis 5)
==============  =======  ============  =======  ===================================================================

Adam for G and D alike, no weight decay; ``d_steps`` D updates before each G update.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ['OptimizerSetting', 'OPTIMIZERS', 'DEFAULT_OPTIMIZER', 'get_optimizer', 'list_optimizers']


@dataclass(frozen=True)
class OptimizerSetting:
    """Adam's lr and betas for G and D, D updates per G update, and where the setting comes from."""

    name: str
    lr: float
    betas: tuple[float, float]
    d_steps: int
    source: str


OPTIMIZERS: dict[str, OptimizerSetting] = {o.name: o for o in (
    OptimizerSetting('san-official', 1e-3, (0.0, 0.99), 1,
                     'sony/san simple-san/hparams/params.json (Adam lr 1e-3, betas (0, 0.99)); 1 D step per G step'),
    OptimizerSetting('dcgan', 2e-4, (0.5, 0.999), 1, 'Radford et al. 2016 (DCGAN), Sec. 4'),
    OptimizerSetting('wgan-gp', 1e-4, (0.5, 0.9), 5, 'Gulrajani et al. 2017 (WGAN-GP), Algorithm 1'),
    OptimizerSetting('sngan', 2e-4, (0.0, 0.9), 5,
                     'Miyato et al. 2018 (SNGAN), ResNet setting from the WGAN-GP CIFAR-10 ResNet code (n_dis 5)'),
)}
DEFAULT_OPTIMIZER = 'san-official'  # the rule: the setting the SAN authors published (module docstring)


def list_optimizers() -> list[str]:
    """Names accepted by :func:`get_optimizer`, the default first."""
    return list(OPTIMIZERS)


def get_optimizer(name: str) -> OptimizerSetting:
    """The optimizer setting ``name``; unknown names fail listing the valid ones."""
    if name not in OPTIMIZERS:
        raise ValueError(f'unknown optimizer setting {name!r}; known: {", ".join(OPTIMIZERS)}')
    return OPTIMIZERS[name]
