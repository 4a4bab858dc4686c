"""Gamma photometric transform (filled in with the loss issue)."""


def insert_gamma_transform(transforms, hyp):
    return transforms
