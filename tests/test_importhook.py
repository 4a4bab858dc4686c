"""The after-import hook: the one mechanism the plugin uses to hook Ultralytics modules."""

import textwrap

from conftest import run_python


def test_callback_for_a_half_imported_module_runs_once_it_has_finished(tmp_path):
    """`outer` imports `inner`, whose import asks for a callback on `outer` while `outer` is still executing (as
    ultralytics.engine.model is when registration runs). The callback must run, after `outer` has finished."""
    (tmp_path / "outer.py").write_text("import inner\nDONE = True\n")
    (tmp_path / "tick.py").write_text("")
    (tmp_path / "inner.py").write_text(
        textwrap.dedent(
            """
            from dsmoe_yolo.importhook import after_import
            seen = []
            after_import("outer", lambda m: seen.append(getattr(m, "DONE", False)))
            """
        )
    )
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import outer, inner
        import tick  # the import of any new module gives deferred callbacks their turn
        print("SEEN", inner.seen)
        """
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SEEN [True]" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_callback_for_a_later_import_runs_right_after_it(tmp_path):
    (tmp_path / "later.py").write_text("VALUE = 7\n")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from dsmoe_yolo.importhook import after_import
        seen = []
        after_import("later", lambda m: seen.append(m.VALUE))
        assert seen == []
        import later
        print("SEEN", seen)
        """
    )
    proc = run_python(code)
    assert "SEEN [7]" in proc.stdout, proc.stdout + proc.stderr[-2000:]
