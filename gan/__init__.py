"""gan: MMD GAN training on top of kernelmmd (stub until its issue lands)."""
