"""Resume files: written only after the bytes they describe are synced, newest wins."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sovnet.store import resumefile
from sovnet.store.resumefile import ResumeWriter, keep_resume


def _partial(tmp_path: Path, files: int = 2) -> Path:
    partial = tmp_path / "partial" / "bcid"
    (partial / "files").mkdir(parents=True)
    for k in range(files):
        (partial / "files" / f"{k:05d}").write_bytes(bytes([k]) * 1000)
    return partial


def test_every_file_is_synced_before_the_resume_file_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = _partial(tmp_path, files=3)
    seen: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        seen.append((Path(target).name, (partial / "resume").exists()))
        real_fsync(fd)

    monkeypatch.setattr(resumefile.os, "fsync", fsync)
    assert keep_resume(partial, b"d8:pieces0:e")
    assert (partial / "resume").read_bytes() == b"d8:pieces0:e"
    # The three files first, none of them after the resume file existed; then the
    # resume file's own fsync (its temporary name) before it is renamed into place.
    assert [name for name, _ in seen[:3]] == ["00000", "00001", "00002"]
    assert not any(existed for _, existed in seen[:3])
    assert (partial / "resume").stat().st_mode & 0o777 == 0o600


def test_a_download_that_is_gone_gets_no_resume_file(tmp_path: Path) -> None:
    partial = tmp_path / "partial" / "bcid"
    assert not keep_resume(partial, b"de")
    assert not partial.exists()


async def test_the_newest_data_wins_and_nothing_is_written_after_close(tmp_path: Path) -> None:
    partial = _partial(tmp_path)
    writer = ResumeWriter(partial)
    for done in (10, 20, 30):
        writer.offer(f"data {done}".encode(), done)
    await writer.close()
    # The first offer may already be on its way; the middle one is superseded.
    assert (partial / "resume").read_bytes() == b"data 30"
    assert writer.saved_at == 30
    writer.offer(b"too late", 40)
    await asyncio.sleep(0.05)
    assert (partial / "resume").read_bytes() == b"data 30"
    assert writer.saved_at == 30


async def test_a_failed_write_is_logged_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    partial = _partial(tmp_path)
    (partial / "resume").mkdir()  # os.replace onto a directory fails
    writer = ResumeWriter(partial)
    writer.offer(b"first", 10)
    await writer.close()
    assert writer.saved_at == 0
    assert "cannot save the resume data of bcid" in caplog.text
    (partial / "resume").rmdir()
    writer = ResumeWriter(partial)
    writer.offer(b"second", 20)
    await writer.close()
    assert (partial / "resume").read_bytes() == b"second"
    assert writer.saved_at == 20
