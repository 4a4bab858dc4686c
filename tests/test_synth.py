"""The embedded synthetic set: safe when several processes generate it at once."""

from __future__ import annotations

import dsmoe_yolo.data.synth as synth


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_two_first_uses_at_once_both_get_the_set(tmp_path, monkeypatch):
    """Writer B starts and finishes while writer A is half-way (two `yolo train` on a fresh datasets_dir): both return
    a complete set and no temporary folder is left. Before, both wrote one `<root>.partial` and A crashed on a file
    B had deleted."""
    root, real, calls = tmp_path / "dsmoe-synth", synth.make_image, []

    def make_image(seed, index, size=320, draw_size=None):
        calls.append(index)
        if len(calls) == 3:  # A has written two boards: B runs from start to finish now
            assert synth.generate(root, n_train=3, n_val=2, size=64) == root
            assert (
                len([f for f in _files(root) if f.endswith((".png", ".txt"))]) == 10
            )  # B's set is in place while A writes
        return real(seed, index, size, draw_size)

    monkeypatch.setattr(synth, "make_image", make_image)
    assert synth.generate(root, n_train=3, n_val=2, size=64) == root
    assert len(calls) == 10, "both writers ran to the end"
    files = _files(root)
    assert (
        len([f for f in files if f.startswith("images/")]) == 5
        and len([f for f in files if f.startswith("labels/")]) == 5
    )
    assert [p.name for p in tmp_path.iterdir()] == ["dsmoe-synth"], "no temporary folder is left behind"


def test_generating_other_parameters_replaces_the_set(tmp_path):
    root = tmp_path / "s"
    synth.generate(root, n_train=2, n_val=1, size=64)
    synth.generate(root, n_train=1, n_val=1, size=64)
    assert len(list((root / "images" / "train").iterdir())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    assert oct((root).stat().st_mode & 0o777) != oct(0o700), "the set is an ordinary folder, not mkdtemp's private one"


def test_an_outdated_bundled_set_is_set_aside_and_the_current_one_kept(tmp_path, monkeypatch):
    """Ultralytics regenerates only missing data: a set from an older version (320 px, no drawing scale) would be
    reused for ever, and the README's first run would score far below what it says."""
    root, lines = tmp_path / "dsmoe-synth", []
    synth.generate(root, n_train=1, n_val=1, size=64)  # other parameters than BUNDLED
    aside = synth.set_aside_if_outdated(root, lines.append)
    assert aside == tmp_path / "dsmoe-synth.outdated-1" and (aside / "images").is_dir() and not root.exists()
    assert "older dsmoe-yolo" in lines[0] and str(aside) in lines[0]
    (root / "images").mkdir(parents=True)  # images without any .synth.json: an even older version
    assert synth.set_aside_if_outdated(root) == tmp_path / "dsmoe-synth.outdated-2"
    monkeypatch.setattr(synth, "BUNDLED", {"n_train": 1, "n_val": 1, "size": 64, "seed": 0, "draw_size": None})
    synth.generate_bundled(root)
    assert synth.set_aside_if_outdated(root) is None and root.is_dir(), "the current set stays"
    assert synth.set_aside_if_outdated(tmp_path / "missing") is None


def test_bundled_yaml_resolution_sets_an_outdated_set_aside(tmp_path, monkeypatch):
    """`data=dsmoe-synth.yaml` checks the data folder before Ultralytics decides whether to download."""
    import ultralytics.utils

    from dsmoe_yolo.plugin import resolve

    monkeypatch.setattr(ultralytics.utils, "DATASETS_DIR", tmp_path)
    synth.generate(tmp_path / "dsmoe-synth", n_train=1, n_val=1, size=64)
    resolved = resolve.make_check_file(lambda *a, **k: None)("dsmoe-synth.yaml")
    assert resolved.endswith("dsmoe-synth.yaml")
    assert not (tmp_path / "dsmoe-synth").exists() and (tmp_path / "dsmoe-synth.outdated-1").is_dir()
