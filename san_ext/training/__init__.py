"""The StyleGAN-XL training pipeline with SAN: options, config, loss phases, loop, statistics.

Importing this package loads only the config; ``san_ext.training.loop.run(cfg)`` is the entry point of
``train.py``.
"""

from .config import (
    PRESETS,
    DataConfig,
    LossConfig,
    OptimConfig,
    Recipe,
    RunConfig,
    SuperresStageConfig,
    TrainingConfig,
    from_json,
    to_json,
)

__all__ = ['PRESETS', 'DataConfig', 'LossConfig', 'OptimConfig', 'Recipe', 'RunConfig', 'SuperresStageConfig',
           'TrainingConfig', 'from_json', 'to_json']
