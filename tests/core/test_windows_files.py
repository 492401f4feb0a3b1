"""Windows file rules, simulated: read-only files refuse deletion and replacement until their flag is cleared."""

from __future__ import annotations

import os
import stat

import pytest

from napari_xrayseg.core import output
from napari_xrayseg.core.output import claim, write_file


@pytest.fixture
def windows(monkeypatch):
    """``os.unlink`` / ``os.replace`` refuse a read-only file as Windows does (WinError 5); our Windows branch on."""
    real_unlink, real_replace = os.unlink, os.replace

    def read_only(path, dir_fd=None):
        try:
            st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and not st.st_mode & stat.S_IWRITE

    def unlink(path, *, dir_fd=None):
        if read_only(path, dir_fd):
            raise PermissionError(13, "Access is denied", str(path))
        real_unlink(path, dir_fd=dir_fd)

    def replace(src, dst, **kw):
        if read_only(dst):
            raise PermissionError(13, "Access is denied", str(dst))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "remove", unlink)  # shutil.rmtree removes files with os.unlink or os.remove
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(output, "_WINDOWS", True)
    yield
    monkeypatch.undo()


def test_a_read_only_file_is_replaced_with_overwrite_and_stays_read_only(tmp_path, windows):
    """QA (Windows rules): --overwrite of a read-only JSON failed naming a hidden temporary file, left behind."""
    target = tmp_path / "r.json"
    target.write_text("old")
    os.chmod(target, 0o444)
    write_file(target, lambda t: t.write_text("new"), overwrite=True, what="JSON")
    assert target.read_text() == "new" and not os.stat(target).st_mode & stat.S_IWRITE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_failed_write_leaves_no_temporary_file_and_keeps_its_own_error(tmp_path, windows):
    def fails(t):
        t.write_text("half")
        os.chmod(t, 0o444)  # a writer that made its file read-only, then failed
        raise OSError(28, "No space left on device")

    with pytest.raises(Exception, match="no space left on device writing .*r.json"):
        write_file(tmp_path / "r.json", fails, what="JSON")
    assert list(tmp_path.iterdir()) == []


def test_an_old_output_holding_a_read_only_file_is_replaced_and_removed(tmp_path, windows, caplog):
    """QA (Windows rules): the new labels were swapped in, then the command failed (exit 2) on the old folder's
    read-only file and left .NAME.xrayseg-old. Now removed; one that still cannot be removed is a warning."""
    out = tmp_path / "o.zarr"
    out.mkdir()
    (out / "zarr.json").write_text("{}")
    (out / "locked").write_text("x")
    os.chmod(out / "locked", 0o444)
    c = claim(out, overwrite=True, store=True)
    (c.take() / "zarr.json").write_text('{"new": 1}')
    assert c.commit() == out and (out / "zarr.json").read_text() == '{"new": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]
    c = claim(out, overwrite=True, store=True)
    c.take()
    real = output.remove_path

    def stuck(p):  # the old folder, once swapped out, cannot be removed (a file held open, say)
        if p.name.endswith(output.OLD) and p.exists():
            raise PermissionError(13, "Access is denied", str(p))
        real(p)

    with pytest.MonkeyPatch.context() as m, caplog.at_level("WARNING", logger="napari_xrayseg"):
        m.setattr(output, "remove_path", stuck)
        assert c.commit() == out
    assert "could not remove the old output" in caplog.text and out.is_dir()


def test_an_old_output_left_beside_that_cannot_be_removed_is_refused_before_the_work(tmp_path, monkeypatch):
    """Review: a stuck .NAME.xrayseg-old failed the next run at its end (or with a bare PermissionError)."""
    from napari_xrayseg.core.errors import OutputWriteError

    out = tmp_path / "o.zarr"
    out.mkdir()
    (tmp_path / f".o.zarr{output.OLD}").mkdir()
    real = output.remove_path

    def stuck(p):
        if p.name.endswith(output.OLD):
            raise PermissionError(13, "Access is denied", str(p))
        real(p)

    monkeypatch.setattr(output, "remove_path", stuck)
    with pytest.raises(OutputWriteError, match=r"the old output .*xrayseg-old, left beside .* remove it by hand"):
        claim(out, overwrite=True, store=True)
