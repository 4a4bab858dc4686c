"""Binding class-text embeddings to DS-MoE models (filled in with the text issue)."""


def bind_for_training(trainer):
    pass
