"""Class names in index order, from any of the forms Ultralytics keeps them in."""

from __future__ import annotations

__all__ = ("ordered_names",)


def ordered_names(names) -> list[str]:
    """``names`` as a list of strings in class-index order.

    Args:
        names: ``{index: name}`` (a data dict's or a model's ``names``) or a sequence of names.

    Examples:
        >>> ordered_names({1: "short", 0: "open"})
        ['open', 'short']
        >>> ordered_names(["open", 2])
        ['open', '2']
    """
    if isinstance(names, dict):
        return [str(names[i]) for i in range(len(names))]
    return [str(n) for n in names]
