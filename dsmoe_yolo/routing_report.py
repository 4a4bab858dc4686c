"""Expert-usage report during validation (filled in with the MoE layers)."""


def on_val_start(validator):
    pass


def on_val_batch_end(validator):
    pass


def on_val_end(validator):
    pass
