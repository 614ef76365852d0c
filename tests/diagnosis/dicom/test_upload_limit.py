"""An upload over the configured limit is refused while it streams, leaving nothing behind."""

from __future__ import annotations

import pytest
from aiohttp import MultipartWriter, hdrs

from telemed.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, secret_key="s" * 48, max_upload_bytes=600_000)


async def test_oversized_upload_is_413_and_nothing_kept(world, shared_data):
    writer = MultipartWriter("related")
    for path in sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))[:3]:
        writer.append(path.read_bytes(), {hdrs.CONTENT_TYPE: "application/dicom"})
    response = await world.client.post("/dicomweb/studies", data=writer, headers={
        hdrs.CONTENT_TYPE: f'multipart/related; type="application/dicom"; boundary={writer.boundary}',
        **world.auth("clinician")})
    assert response.status == 413
    assert (await response.json(content_type=None))["title"] == "Content Too Large"
    with world.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM dicom_instances").fetchone()[0] == 0
    assert not [p for p in (world.data_dir / "dicom").rglob("*") if p.is_file()]
