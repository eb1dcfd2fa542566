"""Installs san_ext and torch_utils. ``pip install -e ".[test]"`` for development."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

setup(
    name='san-ext',
    version='0.1.0',
    description='SAN (Slicing Adversarial Network) for GAN training: layers, losses, converter, StyleGAN-XL recipe',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.9',
    packages=find_packages(include=['san_ext', 'san_ext.*', 'torch_utils', 'torch_utils.*']),
    # Lower bounds only: current PyTorch 2.x and timm 1.x, never an exact old pin.
    install_requires=[
        'torch>=2.1',
        'numpy>=1.24',
        'scipy>=1.10',
        'click>=8.0',
        'tqdm>=4.60',
        'pillow>=9.0',
        'safetensors>=0.4',
        'timm>=1.0',
    ],
    extras_require={
        'test': ['pytest>=7', 'hypothesis>=6', 'POT>=0.9', 'matplotlib>=3.5', 'ruff>=0.4'],
        'bench': ['POT>=0.9', 'matplotlib>=3.5'],
        'metrics': ['torch-fidelity>=0.3', 'POT>=0.9'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
