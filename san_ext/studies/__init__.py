"""Scientific studies, each ``python -m san_ext.studies.NAME``: what SAN (and DOT) change, measured.

- ``toy``: the 2-D mixtures, GAN vs SAN across losses and optimizer settings, with the direction-alignment curve;
- ``dot``: discriminator optimal transport on the 2-D critics;
- ``digits``: sklearn's 8x8 digits, scored on the project's own digit classifier (``digits_classifier``).
- ``stacked``: stacked digits, Stacked MNIST's 1000-mode test (``stacked_modes``), GAN vs SAN vs RpGAN.

Speed benchmarks are in ``san_ext.bench``. Importing this package runs nothing.
"""
