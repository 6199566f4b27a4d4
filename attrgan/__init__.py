"""attrgan: people attribute recognition with restoration GANs."""
