"""gan: MMD-type GANs (SMMD, SWGAN, GCMMD, MMD, MMD-GP, repulsive MMD, WGAN-GP) trained with kernelmmd.

``python -m gan.train --help`` lists every option. Modules, each one readable as a script:
:mod:`gan.data` (datasets and resumable batch streams), :mod:`gan.nets` (DCGAN / MLP registry),
:mod:`gan.spectral` (SN, spectral parametrisation, PICO), :mod:`gan.losses` (the loss registry),
:mod:`gan.config` (the options), :mod:`gan.run` (a run and its updates), :mod:`gan.artefacts` (the run
directory's files), :mod:`gan.train` (the training loop and CLI), :mod:`gan.checkpoint`, :mod:`gan.plots`; how they
fit together: docs/ARCHITECTURE.md, "GAN training".
All kernel maths comes from :mod:`kernelmmd`'s public API.
"""
