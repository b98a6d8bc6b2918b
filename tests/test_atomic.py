"""Folders built beside their final name and put in place whole (vlp/common/atomic.py)."""

from __future__ import annotations

import pytest

from vlp.common.atomic import staged, staging_path


def test_a_staged_folder_replaces_the_old_one_only_when_complete(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staged(final) as building:
        assert building == staging_path(final) and building.is_dir()
        (building / "new.txt").write_text("new")
        assert (final / "old.txt").read_text() == "old"  # readers still see the old folder
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert not staging_path(final).exists()


def test_a_failed_build_leaves_the_old_folder_and_no_staging(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging_path(final).mkdir()  # a leftover of a crashed run: removed before building
    (staging_path(final) / "stale").write_text("x")
    with pytest.raises(KeyboardInterrupt), staged(final) as building:
        assert not (building / "stale").exists()
        (building / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert not staging_path(final).exists()
