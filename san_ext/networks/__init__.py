"""StyleGAN-XL networks: class-conditional generator with super-resolution stages, projected discriminator."""

from .discriminator import DiscriminatorConfig, ProjectedDiscriminator
from .generator import Generator, GeneratorConfig
from .summary import summarize, summary
from .superres import SuperresConfig, SuperresGenerator, build_generator, generator_spec

__all__ = ['DiscriminatorConfig', 'Generator', 'GeneratorConfig', 'ProjectedDiscriminator', 'SuperresConfig',
           'SuperresGenerator', 'build_generator', 'generator_spec', 'summarize', 'summary']
