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
