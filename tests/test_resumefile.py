"""Resume files: written only after the bytes they describe are synced, newest wins
(store/partial.py writes them, daemon/resume_writer.py decides which and when)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from sovnet.core.cid import CID
from sovnet.daemon.resume_writer import ResumeWriter
from sovnet.daemon.supervisor import Supervisor
from sovnet.store import atomicfile
from sovnet.store.partial import PartialDownload
from sovnet.store.store import Store

CID_TEXT = str(CID.of(b"a model"))


def _download(tmp_path: Path, files: int = 2) -> PartialDownload:
    download = PartialDownload(Store(tmp_path / "state"), CID.parse(CID_TEXT))
    for k, path in download.file_paths(files).items():
        path.write_bytes(bytes([k]) * 1000)
    return download


def _writer(download: PartialDownload) -> ResumeWriter:
    return ResumeWriter(download, Supervisor().spawn)


def test_every_file_is_synced_before_the_resume_file_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    download = _download(tmp_path, files=3)
    partial = download.path
    seen: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        seen.append((Path(target).name, (partial / "resume").exists()))
        real_fsync(fd)

    monkeypatch.setattr(atomicfile.os, "fsync", fsync)
    assert download.keep_resume(b"d8:pieces0:e")
    assert (partial / "resume").read_bytes() == b"d8:pieces0:e"
    # The three files first, none of them after the resume file existed; then the
    # resume file's own fsync (its temporary name) before it is renamed into place.
    assert [name for name, _ in seen[:3]] == ["00000", "00001", "00002"]
    assert not any(existed for _, existed in seen[:3])
    assert (partial / "resume").stat().st_mode & 0o777 == 0o600


def test_a_download_that_is_gone_gets_no_resume_file(tmp_path: Path) -> None:
    download = PartialDownload(Store(tmp_path / "state"), CID.parse(CID_TEXT))
    assert not download.keep_resume(b"de")
    assert not download.path.exists()


async def test_the_newest_data_wins_and_nothing_is_written_after_close(tmp_path: Path) -> None:
    download = _download(tmp_path)
    partial = download.path
    writer = _writer(download)
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
    download = _download(tmp_path)
    partial = download.path
    (partial / "resume").mkdir()  # os.replace onto a directory fails
    writer = _writer(download)
    writer.offer(b"first", 10)
    await writer.close()
    assert writer.saved_at == 0
    assert f"cannot save the resume data of {CID_TEXT}" in caplog.text
    (partial / "resume").rmdir()
    writer = _writer(download)
    writer.offer(b"second", 20)
    await writer.close()
    assert (partial / "resume").read_bytes() == b"second"
    assert writer.saved_at == 20
