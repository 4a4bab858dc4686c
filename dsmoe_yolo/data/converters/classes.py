"""Class names of the five datasets, their raw-label alias tables, and the raw label -> class id lookup.

Class ids follow the order of the ``*_NAMES`` tuples. Raw labels are matched case-, space-, ``_``- and
``-``-insensitively (:func:`normalise_name`) against the class names and the aliases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from dsmoe_yolo.errors import ConfigError

__all__ = (
    "ALUMINUM_ALIASES",
    "ALUMINUM_NAMES",
    "DEEPPCB_NAMES",
    "DEEPPCB_TYPES",
    "GC10_DET_ALIASES",
    "GC10_DET_NAMES",
    "NEU_DET_NAMES",
    "PKU_PCB_NAMES",
    "class_lookup",
    "normalise_name",
)

PKU_PCB_NAMES = ("missing_hole", "mouse_bite", "open_circuit", "short", "spur", "spurious_copper")
ALUMINUM_NAMES = ("pinhole", "scratch", "contamination", "crease")
DEEPPCB_NAMES = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
NEU_DET_NAMES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
GC10_DET_NAMES = (
    "punching_hole",
    "welding_line",
    "crescent_gap",
    "water_spot",
    "oil_spot",
    "silk_spot",
    "inclusion",
    "rolled_pit",
    "crease",
    "waist_folding",
)

# Raw label -> class name. The paper's pinyin forms, the Tianchi pinyin spellings and the Chinese labels.
ALUMINUM_ALIASES = {
    "针孔": "pinhole",
    "zhen_kong": "pinhole",
    "擦花": "scratch",
    "擦伤": "scratch",
    "ca_hua": "scratch",
    "ca_shang": "scratch",
    "脏点": "contamination",
    "脏污": "contamination",
    "zang_dian": "contamination",
    "zang_wu": "contamination",
    "褶皱": "crease",
    "折皱": "crease",
    "zhe_zhou": "crease",
}
_GC10_PINYIN = ("chongkong", "hanfeng", "yueyawan", "shuiban", "youban", "siban", "yiwu", "yahen", "zhehen", "yaozhe")
_GC10_SHORT = ("pu", "wl", "cg", "ws", "os", "ss", "in", "rp", "cr", "wf")  # abbreviations used by some mirrors
# Raw GC10 names ("1_chongkong"), bare pinyin, bare folder numbers, two-letter abbreviations, and the misspelling
# "10_yaozhed" found in the distributed XML.
GC10_DET_ALIASES = {
    **{f"{i + 1}_{py}": GC10_DET_NAMES[i] for i, py in enumerate(_GC10_PINYIN)},
    **{py: GC10_DET_NAMES[i] for i, py in enumerate(_GC10_PINYIN)},
    **{str(i + 1): GC10_DET_NAMES[i] for i in range(len(GC10_DET_NAMES))},
    **{ab: GC10_DET_NAMES[i] for i, ab in enumerate(_GC10_SHORT)},
    "10_yaozhed": "waist_folding",
}
DEEPPCB_TYPES = {str(i + 1): n for i, n in enumerate(DEEPPCB_NAMES)}  # type 1..6 in the txt files


def normalise_name(name: str) -> str:
    """Lower-case a raw class name and remove spaces, ``_`` and ``-`` (``Missing_hole`` -> ``missinghole``)."""
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def class_lookup(names: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, int]:
    """Map normalised raw class names to class ids.

    Args:
        names: The dataset's class names, in id order.
        aliases: Extra ``{raw name: class name}`` entries.

    Returns:
        ``{normalise_name(raw): class id}`` covering every class name and alias.

    Raises:
        ConfigError: If an alias points to a name that is not a class.
    """
    lookup = {normalise_name(n): i for i, n in enumerate(names)}
    for raw, target in (aliases or {}).items():
        if target not in names:
            raise ConfigError(f"alias '{raw}' -> '{target}': '{target}' is not a class; use one of {list(names)}")
        lookup[normalise_name(raw)] = names.index(target)
    return lookup
