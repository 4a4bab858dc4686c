"""Deterministic synthetic PCB defect set: the embedded default data (``data=dsmoe-synth.yaml``), offline.

Each image is a PCB-like board (green solder mask, copper traces, pads and vias, mild noise and blur) with 2-6
defects of the six DeepPCB / PKU-PCB kinds at varied scale, each labelled with a tight YOLO box:

========  ===================  ======================================================
class id  name                 how it is drawn
========  ===================  ======================================================
0         open                 a gap cut across a trace
1         short                a copper bridge between two parallel traces
2         mousebite            semicircular bites out of a trace edge
3         spur                 a thin copper sliver sticking out of a trace edge
4         spurious_copper      an isolated copper blob on bare mask
5         pinhole              a small hole through a pad
========  ===================  ======================================================

Generation is a pure function of ``seed`` and the image index (NumPy ``default_rng``), so two machines produce
byte-identical sets. Ultralytics runs :func:`generate` from the dataset YAML's ``download:`` step on first use.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

NAMES = ("open", "short", "mousebite", "spur", "spurious_copper", "pinhole")
MASK = (40, 95, 35)  # BGR solder-mask green
COPPER = (70, 165, 205)  # BGR copper / gold
HOLE = (25, 45, 20)  # drilled hole / bare substrate
SPEC_FILE = ".synth.json"  # the generation parameters, written last into the set
BUNDLED = {"n_train": 200, "n_val": 50, "size": 256, "seed": 0, "draw_size": 128}  # datasets/dsmoe-synth.yaml's set


class _Board:
    """One board: traces are kept as segments so defects can be placed on (or between) them."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, size
        self.img = np.empty((size, size, 3), np.uint8)
        self.img[:] = MASK
        self.img = np.clip(self.img.astype(np.int16) + rng.integers(-8, 9, (1, 1, 3)), 0, 255).astype(np.uint8)
        self.h_traces: list[tuple[int, int, int, int]] = []  # (y, x0, x1, width)
        self.pads: list[tuple[int, int, int]] = []  # (x, y, radius)
        self.boxes: list[tuple[int, float, float, float, float]] = []
        self._draw_layout()

    def _draw_layout(self):
        rng, s = self.rng, self.size
        y = int(rng.integers(12, 30))
        while y < s - 16:  # parallel horizontal buses of varied width and spacing
            w = int(rng.integers(3, 9))
            x0, x1 = int(rng.integers(0, s // 4)), int(rng.integers(3 * s // 4, s))
            cv2.line(self.img, (x0, y), (x1, y), COPPER, w)
            self.h_traces.append((y, x0, x1, w))
            for _ in range(int(rng.integers(0, 3))):  # pads hanging on the trace
                px, r = int(rng.integers(x0 + 10, max(x0 + 11, x1 - 10))), int(rng.integers(w // 2 + 3, w // 2 + 8))
                cv2.circle(self.img, (px, y), r, COPPER, -1)
                self.pads.append((px, y, r))
            y += int(rng.integers(w + 12, w + 40))
        for _ in range(int(rng.integers(1, 4))):  # vertical jumpers with vias
            x, w = int(rng.integers(10, s - 10)), int(rng.integers(3, 7))
            y0, y1 = sorted(int(v) for v in rng.integers(5, s - 5, 2))
            cv2.line(self.img, (x, y0), (x, y1), COPPER, w)
            for yy in (y0, y1):
                cv2.circle(self.img, (x, yy), w + 3, COPPER, -1)
                cv2.circle(self.img, (x, yy), max(w // 2, 2), HOLE, -1)

    def _box(self, cls: int, x0, y0, x1, y1):
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(self.size - 1, x1), min(self.size - 1, y1)
        if x1 - x0 >= 3 and y1 - y0 >= 3:
            self.boxes.append((cls, x0, y0, x1, y1))

    def _trace(self):
        return self.h_traces[int(self.rng.integers(len(self.h_traces)))] if self.h_traces else None

    def _free_spot(self, r: int):
        """A point on bare mask at least ``r`` px from copper (rejection sampling), or None."""
        copper = cv2.inRange(self.img, np.array(COPPER) - 1, np.array(COPPER) + 1)
        for _ in range(40):
            x, y = (int(v) for v in self.rng.integers(r + 2, self.size - r - 2, 2))
            if not copper[y - r - 2 : y + r + 3, x - r - 2 : x + r + 3].any():
                return x, y
        return None

    def add_defect(self, cls: int):
        rng, t = self.rng, self._trace()
        if cls == 0 and t:  # open: cut across the trace
            y, x0, x1, w = t
            gap, x = int(rng.integers(3, 9)), int(rng.integers(x0 + 8, max(x0 + 9, x1 - 8)))
            cv2.rectangle(self.img, (x, y - w), (x + gap, y + w), MASK, -1)
            self._box(0, x - 2, y - w // 2 - 3, x + gap + 2, y + w // 2 + 3)
        elif cls == 1 and len(self.h_traces) > 1:  # short: bridge between neighbouring traces
            i = int(rng.integers(len(self.h_traces) - 1))
            (ya, xa0, xa1, _), (yb, xb0, xb1, _) = self.h_traces[i], self.h_traces[i + 1]
            lo, hi = max(xa0, xb0) + 5, min(xa1, xb1) - 5
            if hi > lo and yb - ya < 60:
                x, w = int(rng.integers(lo, hi)), int(rng.integers(2, 5))
                cv2.line(self.img, (x, ya), (x + int(rng.integers(-6, 7)), yb), COPPER, w)
                self._box(1, x - w - 6, ya - 2, x + w + 6, yb + 2)
        elif cls == 2 and t:  # mousebite: bites out of one edge
            y, x0, x1, w = t
            x, side = int(rng.integers(x0 + 8, max(x0 + 9, x1 - 20))), 1 if rng.random() < 0.5 else -1
            r, n = max(2, w // 2), int(rng.integers(2, 4))
            for k in range(n):
                cv2.circle(self.img, (x + k * (r + 2), y + side * (w // 2)), r, MASK, -1)
            self._box(
                2,
                x - r - 1,
                y + min(0, side) * (w // 2 + r) - 1,
                x + n * (r + 2) + 1,
                y + max(0, side) * (w // 2 + r) + 1,
            )
        elif cls == 3 and t:  # spur: sliver out of one edge
            y, x0, x1, w = t
            x, side = int(rng.integers(x0 + 8, max(x0 + 9, x1 - 8))), 1 if rng.random() < 0.5 else -1
            length, dx = int(rng.integers(5, 14)), int(rng.integers(-5, 6))
            tip = (x + dx, y + side * (w // 2 + length))
            cv2.line(self.img, (x, y + side * (w // 2)), tip, COPPER, int(rng.integers(1, 3)))
            self._box(
                3,
                min(x, tip[0]) - 3,
                min(y + side * w // 2, tip[1]) - 2,
                max(x, tip[0]) + 3,
                max(y + side * w // 2, tip[1]) + 2,
            )
        elif cls == 4:  # spurious copper: isolated blob
            r = int(rng.integers(3, 10))
            spot = self._free_spot(r)
            if spot:
                x, y = spot
                axes = (r, max(2, int(r * rng.uniform(0.5, 1.0))))
                cv2.ellipse(self.img, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, COPPER, -1)
                self._box(4, x - r - 1, y - r - 1, x + r + 1, y + r + 1)
        elif cls == 5 and self.pads:  # pinhole in a pad
            x, y, r = self.pads[int(rng.integers(len(self.pads)))]
            hr = max(1, r // 3)
            cx, cy = x + int(rng.integers(-r // 3, r // 3 + 1)), y + int(rng.integers(-r // 3, r // 3 + 1))
            cv2.circle(self.img, (cx, cy), hr, HOLE, -1)
            self._box(5, cx - hr - 2, cy - hr - 2, cx + hr + 2, cy + hr + 2)

    def finish(self) -> np.ndarray:
        noise = self.rng.normal(0, 4, self.img.shape)
        img = np.clip(self.img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        return cv2.GaussianBlur(img, (3, 3), 0.6)


def make_image(
    seed: int, index: int, size: int = 320, draw_size: int | None = None
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """Return one board image (HxWx3 BGR uint8) and its YOLO labels ``(cls, cx, cy, w, h)`` (normalised).

    The board is drawn at ``draw_size`` px (default ``size``) and resized to ``size``: a smaller ``draw_size`` gives
    fewer, larger traces and defects (relative to the image) at the same image size.

    Examples:
        >>> img, labels = make_image(0, 0)
        >>> img.shape, 2 <= len(labels) <= 6
        ((320, 320, 3), True)
    """
    rng = np.random.default_rng([seed, index])
    draw = int(draw_size or size)
    board = _Board(rng, draw)
    want = int(rng.integers(2, 7))
    for _ in range(want * 3):  # some placements fail (no room); retry with other kinds
        if len(board.boxes) >= want:
            break
        board.add_defect(int(rng.integers(len(NAMES))))
    img = board.finish()
    if draw != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    labels = [
        (c, (x0 + x1) / 2 / draw, (y0 + y1) / 2 / draw, (x1 - x0) / draw, (y1 - y0) / draw)
        for c, x0, y0, x1, y1 in board.boxes
    ]
    return img, labels


def generate(
    root: str | Path, n_train: int = 200, n_val: int = 50, size: int = 320, seed: int = 0, draw_size: int | None = None
) -> Path:
    """Write the synthetic set under ``root`` (``images/{train,val}``, ``labels/{train,val}``); return ``root``.

    Deterministic for a given ``(n_train, n_val, size, seed, draw_size)`` (``draw_size``: see ``make_image``), recorded
    in ``root/.synth.json``. Safe for concurrent
    writers (two trainings starting at once on a fresh ``datasets_dir``): each writes its own temporary folder next to
    ``root`` and renames it into place; if another writer got there first with the same set, its copy is kept and this
    one discarded. An interrupted run never leaves a half-written set that Ultralytics would accept.
    """
    root = Path(root)
    t0 = time.time()
    spec = _spec(n_train=n_train, n_val=n_val, size=size, seed=seed, draw_size=draw_size)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the set is an ordinary folder
        index = 0
        for split, count in (("train", n_train), ("val", n_val)):
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                img, labels = make_image(seed, index, size, draw_size)
                stem = f"board_{index:05d}"
                if not cv2.imwrite(str(tmp / "images" / split / f"{stem}.png"), img):
                    raise OSError(f"dsmoe-synth: could not write {tmp / 'images' / split / stem}.png")
                lines = [f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" for c, cx, cy, w, h in labels]
                (tmp / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
                index += 1
        (tmp / SPEC_FILE).write_text(spec)
        if not _install(tmp, root, spec):
            print(f"dsmoe-synth: {root} was written by another process meanwhile; using it")
            return root
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful rename; the partial folder otherwise
    print(f"dsmoe-synth: wrote {n_train} train + {n_val} val boards to {root} in {time.time() - t0:.1f}s")
    return root


def _spec(**params) -> str:
    return json.dumps(params, sort_keys=True)


def generate_bundled(root: str | Path) -> Path:
    """The set of ``datasets/dsmoe-synth.yaml`` (``BUNDLED``), from its ``download:`` step.

    Ultralytics then logs "Dataset download success ..., saved to <its datasets_dir>", which is not where the set went
    when it was relocated to the user cache (``data/location.py``): that one line is rewritten to the true folder.
    """
    out = generate(root, **BUNDLED)
    try:
        from ultralytics.utils import LOGGER
    except ImportError:  # pragma: no cover - generated without Ultralytics (tests, scripts)
        return out
    LOGGER.addFilter(_TrueDownloadLine(LOGGER, Path(out)))
    return out


class _TrueDownloadLine(logging.Filter):
    """One-shot filter: Ultralytics' next "Dataset download success" line names ``root``, then the filter leaves."""

    def __init__(self, logger: logging.Logger, root: Path):
        super().__init__()
        self.logger, self.root = logger, root

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Dataset download success" in message:
            took = message.split("success ✅", 1)[-1].split(",", 1)[0].strip()
            record.msg, record.args = f"dsmoe-synth: generated {took}, saved to {self.root}\n", ()
            self.logger.removeFilter(self)
        return True


def set_aside_if_outdated(root: str | Path, log=None) -> Path | None:
    """Move an outdated bundled set out of the way so that Ultralytics regenerates the current one.

    Ultralytics runs ``download:`` only when the data is missing, so a set generated by an older version (other
    image size or drawing scale: a harder or easier first run than the README says) would be reused forever. A
    folder holding images whose ``.synth.json`` is missing or records other parameters than ``BUNDLED`` is renamed to
    ``<root>.outdated-<n>`` (kept, not deleted) and one line says so. Returns the new location, or None.
    """
    root = Path(root)
    marker = root / SPEC_FILE
    if not (root / "images").is_dir() or (marker.is_file() and marker.read_text() == _spec(**BUNDLED)):
        return None
    n = 1
    while (aside := root.with_name(f"{root.name}.outdated-{n}")).exists():
        n += 1
    try:
        os.rename(root, aside)
    except OSError:  # another process moved or replaced it meanwhile
        return None
    if log:
        log(
            f"dsmoe-synth: {root} was generated by an older dsmoe-yolo (other size or drawing scale); moved to "
            f"{aside} and generating the current set"
        )
    return aside


def _install(tmp: Path, root: Path, spec: str) -> bool:
    """Rename the finished folder ``tmp`` to ``root``; return False if an identical set already sits there."""
    for _ in range(5):
        try:
            os.rename(tmp, root)  # atomic; fails if root exists and is not empty
            return True
        except OSError:
            if not root.exists():
                raise
        marker = root / SPEC_FILE
        if marker.is_file() and marker.read_text() == spec:
            return False  # a concurrent writer's identical set: keep it (it may already be in use)
        aside = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
        try:
            os.replace(root, aside / root.name)  # a different or older set: move it aside, then retry
        except OSError:
            pass  # someone else moved it meanwhile
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"dsmoe-synth: could not move the generated set into {root}; delete {root} and try again")
