"""Installs san_ext and torch_utils. ``pip install -e ".[test]"`` for development."""

import os
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def cuda_extensions() -> tuple[list, dict]:
    """Ahead-of-time CUDA builds of csrc/<op>.cpp + csrc/<op>.cu as torch_utils/ops/_C_<op>.

    SAN_EXT_CUDA=1 forces the build (needs torch at build time: ``pip install --no-build-isolation``), 0 skips it;
    by default it builds only where torch, a CUDA toolkit and a GPU are all present. Without a prebuilt library
    the ops build just in time on first use, or fall back to their PyTorch reference.
    """
    mode = os.environ.get('SAN_EXT_CUDA', 'auto')
    if mode == '0':
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as err:
        if mode == '1':
            msg = 'SAN_EXT_CUDA=1 needs PyTorch at build time: pip install --no-build-isolation -e .'
            raise SystemExit(msg) from err
        return [], {}
    if mode != '1' and not (CUDA_HOME and torch.cuda.is_available()):
        return [], {}
    csrc = HERE / 'csrc'
    exts = [CUDAExtension(f'torch_utils.ops._C_{cu.stem}',
                          sources=[str((csrc / f'{cu.stem}.cpp').relative_to(HERE)), str(cu.relative_to(HERE))],
                          include_dirs=[str(csrc)],
                          extra_compile_args={'cxx': ['-O3'], 'nvcc': ['-O3', '-lineinfo']})
            for cu in sorted(csrc.glob('*.cu'))]
    return exts, {'build_ext': BuildExtension}


EXT_MODULES, CMDCLASS = cuda_extensions()

setup(
    name='san-ext',
    version='0.1.0',
    description='SAN (Slicing Adversarial Network) for GAN training: layers, losses, converter, StyleGAN-XL recipe',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.9',
    packages=[*find_packages(include=['san_ext', 'san_ext.*', 'torch_utils', 'torch_utils.*']),
              'san_ext.patching.bundled'],
    # The patch series in patches/ ships inside the package as san_ext/patching/bundled/ (found from __file__ by
    # san_ext.patching.series.bundled_series_dir; a source checkout reads patches/ directly).
    package_dir={'san_ext.patching.bundled': 'patches'},
    # Lower bounds only: current PyTorch 2.x and timm 1.x, never an exact old pin.
    install_requires=[
        'torch>=2.1',
        'numpy>=1.24',
        'scipy>=1.10',
        'click>=8.0',
        'tqdm>=4.60',
        'pillow>=9.0',
        'safetensors>=0.4',
        'tensorboard>=2.10',  # training scalars (san_ext.training.stats)
        'timm>=1.0',
        'ninja>=1.10',  # just-in-time builds of the CUDA ops
        'scikit-learn>=1.2',  # built-in digits dataset (san_ext.data.builtin)
    ],
    extras_require={
        'test': ['pytest>=7', 'hypothesis>=6', 'POT>=0.9', 'matplotlib>=3.5', 'ruff>=0.4', 'torch-fidelity>=0.3'],
        'bench': ['POT>=0.9', 'matplotlib>=3.5'],
        'metrics': ['torch-fidelity>=0.3', 'POT>=0.9'],
    },
    # Small data that ships inside the package: the digits classifier used by the digits study's metrics.
    package_data={'san_ext.studies': ['weights/*.safetensors', 'weights/*.json'],
                  'san_ext.patching.bundled': ['*/series', '*/*.patch', '*/fingerprints.json']},
    entry_points={'console_scripts': ['san-patch=san_ext.patching.cli:main']},
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
