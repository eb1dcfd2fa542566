"""The allow-list of the restricted unpickler: every global a released StyleGAN-XL / StyleSAN-XL pickle may name.

A pickle names globals as ``module.name``; the standard unpickler imports each one and calls whatever the pickle
says. Ours looks each name up here instead. There are four kinds of entries, and none of them imports or runs code
from the pickle's world (timm, pg_modules, dnnlib, the embedded sources):

- **classes** (``MODULE_CLASSES``, ``TORCH_NN_EXTRA``, any public ``torch.nn`` module class under
  ``torch.nn.modules``, ``PERSISTENT_CLASSES`` by name): become inert :class:`~san_ext.legacy.records.Record`
  subclasses that only store the state the pickle gives them;
- **references** (``FUNCTION_REFS``): functions upstream stores on modules (a monkey-patched ``forward_flex``),
  kept as names; calling one from the pickle is refused;
- **data constructors** (``unpickler._Unpickler._constructors``): ``collections.OrderedDict``, ``torch.Size``,
  ``torch.device``, dtypes, tensor and storage rebuilding (storages go through ``torch.load(weights_only=True)``),
  numpy arrays and scalars (dtype strings only), ``dnnlib.util.EasyDict`` (as a plain dict subclass),
  ``copyreg`` object creation for the classes above only;
- **dill helpers** (``DILL_HELPERS``): dill pickles closures (the ViT forward hooks) as code objects by value;
  these become inert records and are never compiled.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.*``, an unknown class) is refused with an error that
names it. :func:`san_ext.legacy.unpickler.allowed_globals` lists every entry; ``tests/test_legacy_safety.py`` pins that
list literally, so an entry added here (or a special case added to the resolver) fails a test until it is pinned too.
The lists were taken from pickles that upstream's own code wrote (timm 0.4.12, dill 0.3.4 and 0.3.8) plus the later
module paths of the same timm and torch classes.
"""

from __future__ import annotations

import torch

__all__ = ['DILL_HELPERS', 'FUNCTION_REFS', 'MODULE_CLASSES', 'MODULE_DICTS', 'PERSISTENT_CLASSES',
           'TORCH_NN_EXTRA', 'is_torch_nn_class']

# Classes that upstream decorates with @persistence.persistent_class (training/networks_stylegan{2,3,3_resetting}.py,
# training/augment.py): pickled as (source code, class name, state). Checked by class name; the source is never run.
PERSISTENT_CLASSES = frozenset({
    'AugmentPipe', 'Conv2dLayer', 'Conv2dLayerDepthwise', 'Discriminator', 'DiscriminatorBlock',
    'DiscriminatorEpilogue', 'FullyConnectedLayer', 'Generator', 'MappingNetwork', 'MinibatchStdLayer',
    'SuperresGenerator', 'SynthesisBlock', 'SynthesisInput', 'SynthesisLayer', 'SynthesisNetwork',
    'SynthesisNetworkSkipRGB', 'ToRGBLayer',
})

# Classes pickled by module path (not persistent): the projected discriminator, its timm backbones, helpers.
MODULE_CLASSES: dict[str, frozenset] = {
    'pg_modules.discriminator': frozenset({'ProjectedDiscriminator', 'MultiScaleD', 'SingleDisc', 'SingleDiscCond'}),
    'pg_modules.blocks': frozenset({'DownBlock', 'DownBlockPatch', 'FeatureFusionBlock', 'ResidualConvUnit',
                                    'Interpolate', 'GLU', 'Swish'}),
    'pg_modules.projector': frozenset({'F_RandomProj', 'F_Identity'}),
    'pg_modules.san_modules': frozenset({'SANLinear', 'SANConv1d', 'SANConv2d', 'SANEmbedding'}),
    'feature_networks.vit': frozenset({'Slice', 'AddReadout', 'ProjectReadout', 'Transpose'}),
    # timm 0.4.12 (upstream's pin) ...
    'timm.models.vision_transformer': frozenset({'VisionTransformer', 'VisionTransformerDistilled', 'Block',
                                                 'Attention', 'LayerScale'}),
    'timm.models.deit': frozenset({'VisionTransformerDistilled'}),
    'timm.models.layers.patch_embed': frozenset({'PatchEmbed'}),
    'timm.models.layers.mlp': frozenset({'Mlp'}),
    'timm.models.layers.drop': frozenset({'DropPath'}),
    'timm.models.layers.conv2d_same': frozenset({'Conv2dSame'}),
    'timm.models.layers.padding': frozenset({'Pad2dSame'}),
    'timm.models.layers.norm_act': frozenset({'BatchNormAct2d'}),
    'timm.models.layers.squeeze_excite': frozenset({'SqueezeExcite', 'SEModule'}),
    'timm.models.layers.activations': frozenset({'Swish', 'HardSwish', 'HardSigmoid', 'GELU', 'Sigmoid', 'Tanh'}),
    'timm.models.layers.linear': frozenset({'Linear'}),
    'timm.models.layers.adaptive_avgmax_pool': frozenset({'SelectAdaptivePool2d'}),
    'timm.models.efficientnet': frozenset({'EfficientNet', 'EfficientNetFeatures'}),
    'timm.models.efficientnet_blocks': frozenset({'DepthwiseSeparableConv', 'InvertedResidual', 'SqueezeExcite',
                                                  'ConvBnAct', 'EdgeResidual', 'CondConvResidual'}),
    # ... and the same classes under timm >= 0.9 paths.
    'timm.models._efficientnet_blocks': frozenset({'DepthwiseSeparableConv', 'InvertedResidual', 'SqueezeExcite',
                                                   'ConvBnAct', 'EdgeResidual', 'CondConvResidual'}),
    'timm.layers.patch_embed': frozenset({'PatchEmbed'}),
    'timm.layers.mlp': frozenset({'Mlp'}),
    'timm.layers.drop': frozenset({'DropPath'}),
    'timm.layers.conv2d_same': frozenset({'Conv2dSame'}),
    'timm.layers.padding': frozenset({'Pad2dSame'}),
    'timm.layers.norm_act': frozenset({'BatchNormAct2d'}),
    'timm.layers.layer_scale': frozenset({'LayerScale'}),
    'timm.layers.linear': frozenset({'Linear'}),
    'timm.layers.adaptive_avgmax_pool': frozenset({'SelectAdaptivePool2d'}),
}

# torch.nn objects outside torch.nn.modules that a module's __dict__ holds (spectral-norm hooks, quantized add).
TORCH_NN_EXTRA: dict[str, frozenset] = {
    'torch.nn.utils.spectral_norm': frozenset({'SpectralNorm', 'SpectralNormStateDictHook',
                                               'SpectralNormLoadStateDictPreHook'}),
    'torch.nn.modules.module': frozenset({'_WrappedHook'}),
    'torch.nn.quantized.modules.functional_modules': frozenset({'FloatFunctional'}),
    'torch.ao.nn.quantized.modules.functional_modules': frozenset({'FloatFunctional'}),
}

# Functions upstream stores on modules; kept as names, never called.
FUNCTION_REFS: dict[str, frozenset] = {
    'feature_networks.vit': frozenset({'forward_flex', '_resize_pos_embed', 'forward_vit', 'get_activation'}),
    'torch.nn.functional': frozenset({'interpolate'}),
}

# Module namespaces whose ``__dict__`` dill may name as the globals of a closure it pickles by value.
MODULE_DICTS = frozenset({'feature_networks.vit', 'pg_modules.blocks', 'pg_modules.discriminator',
                          'pg_modules.projector', 'feature_networks.pretrained_builder'})

# dill's private helpers (dill 0.3.4 to 0.3.8): rebuilt as inert records, except where unpickler.py says otherwise.
DILL_HELPERS = frozenset({'_create_function', '_create_code', '_create_cell', '_load_type', '_get_attr',
                          '_import_module', '_create_array', '_setattr'})


def is_torch_nn_class(module: str, name: str) -> bool:
    """A public nn.Module class of the installed torch, named under ``torch.nn.modules`` (e.g. ``Conv2d``)."""
    if not module.startswith('torch.nn.modules.') or name.startswith('_'):
        return False
    cls = getattr(torch.nn, name, None)
    return isinstance(cls, type) and issubclass(cls, torch.nn.Module)
