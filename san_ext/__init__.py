"""san-ext: SAN (Slicing Adversarial Network) layers, losses, conversion and sampling tools for GAN training."""

from . import losses
from .convert import SANDiscriminator, sanify
from .layers import SANConv2d, SANEmbedding, SANLinear, is_san_layer, normalize_san_weights, san_param_groups

__version__ = '0.1.0'

__all__ = ['SANConv2d', 'SANDiscriminator', 'SANEmbedding', 'SANLinear', 'is_san_layer', 'losses',
           'normalize_san_weights', 'san_param_groups', 'sanify']
