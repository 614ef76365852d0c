"""An upload over the configured limit is refused while it streams, leaving nothing behind;
a large one is checked without being held in memory."""

from __future__ import annotations

import hashlib
import tracemalloc

import pydicom
import pytest

from diagnosis.dicom import archive
from telemed.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, secret_key="s" * 48, max_upload_bytes=600_000)


async def test_oversized_upload_is_413_and_nothing_kept(world, shared_data):
    _, body = await world.stow(sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))[:3],
                               expect=413)
    assert body["title"] == "Content Too Large"
    with world.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM dicom_instances").fetchone()[0] == 0
    assert not [p for p in (world.data_dir / "dicom").rglob("*") if p.is_file()]


def test_checking_a_large_upload_keeps_its_pixels_on_disk(shared_data, tmp_path):
    """A 100 MB multi-frame instance (the CT slice's pixels repeated) is inspected with well
    under a megabyte of Python memory at the peak: values stay on disk, the hash is streamed;
    the same file cut short is still refused."""
    ds = pydicom.dcmread(shared_data / "dicom" / "ct-head-ge" / "01.dcm")
    frames = 200
    ds.NumberOfFrames = frames
    ds.PixelData = ds.PixelData * frames
    big = tmp_path / "big.dcm"
    ds.save_as(big, enforce_file_format=True)
    del ds
    tracemalloc.start()
    try:
        instance = archive.inspect(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert instance.frames == frames and instance.size == big.stat().st_size > 100_000_000
    with big.open("rb") as stream:
        assert instance.sha256 == hashlib.file_digest(stream, "sha256").hexdigest()
    assert peak < 1_000_000, peak
    with big.open("r+b") as stream:
        stream.truncate(big.stat().st_size - 2)
    with pytest.raises(archive.DicomRejected, match="truncated"):
        archive.inspect(big)
