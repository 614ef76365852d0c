"""Filing stored instances, the one step STOW-RS, plain uploads and C-STORE share: the archive
admits the instance, then the app's `Deriver` makes its progressive streams in the background
(`dicom_prepare` codecs), so the first viewer over a slow link is not kept waiting for them."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from diagnosis.dicom import archive, progressive
from diagnosis.dicom.progressive import Deriver
from telemed.api.context import DATABASE, SETTINGS
from telemed.caller import Caller
from telemed.settings import SettingsError

DERIVER = web.AppKey("progressive_deriver", Deriver)


async def admit(app: web.Application, caller: Caller, instance: archive.Instance, upload: Path,
                patient_id: str | None = None, consult_id: str | None = None) -> str:
    """`archive.admit` on the database thread; a newly stored image is queued for preparing."""
    settings = app[SETTINGS]
    outcome = await app[DATABASE].write(archive.admit, caller, instance, patient_id, consult_id,
                                        settings.data_dir, upload)
    if outcome == "stored" and instance.is_image and settings.dicom_prepare:
        app[DERIVER].prepare(archive.instance_path(settings.data_dir, instance), instance.sha256,
                             settings.dicom_prepare)
    return outcome


async def _deriver_ctx(app: web.Application) -> AsyncIterator[None]:
    unknown = set(app[SETTINGS].dicom_prepare) - set(progressive.MODES)
    if unknown:
        raise SettingsError(f"dicom_prepare: unknown codec {', '.join(sorted(unknown))} "
                            f"(one of {', '.join(progressive.MODES)})")
    app[DERIVER] = Deriver(app[SETTINGS].data_dir / "dicom" / "progressive")
    yield
    await app[DERIVER].close()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_deriver_ctx)
