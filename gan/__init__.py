"""gan: MMD-type GANs (SMMD, SWGAN, GCMMD, MMD, MMD-GP, repulsive MMD, WGAN-GP) trained with kernelmmd.

``python -m gan.train --help`` lists every option. The modules, each one readable as a script, and how they fit
together: docs/ARCHITECTURE.md (section "GAN training").
"""
