"""A DICOM C-STORE SCP (pynetdicom) so modalities can push studies the classic way.

Off unless `dicom_port` is set. A modality acts as one configured staff account
(`dicom_account`, e.g. the township CT's technician), so the same patient rules and audit apply
as for STOW-RS. pynetdicom runs associations on its own threads; each instance is written as a
Part 10 file from the received bytes (never re-encoded) and filed through the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from diagnosis.dicom import archive, ingest
from diagnosis.dicom.archive import DicomRejected
from telemed.api.context import DATABASE, SETTINGS
from telemed.api.problems import audit_refusal
from telemed.caller import Caller, InvalidRequest
from telemed.permissions import Forbidden
from telemed.store import Conflict, NotFound, accounts

log = logging.getLogger(__name__)

SUCCESS, NOT_AUTHORIZED, CANNOT_UNDERSTAND = 0x0000, 0x0124, 0xC000
UNFILED = 0xC001
"""C-STORE failures are Cxxx ("cannot understand") with an implementation-defined code: 0xC000
for a file that is not a complete instance, 0xC001 for one the archive will not file (unknown
patient, conflicting copy), 0x0124 when the account may not see the patient."""
STORE_TIMEOUT = 60.0


class StoreSCP:
    def __init__(self, app: web.Application, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.server = None

    def start(self, host: str, port: int, ae_title: str) -> int:
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self.server = ae.start_server((host, port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_store(self, event: evt.Event) -> int:
        """On a pynetdicom thread: spool the received bytes, then file them on the loop."""
        root = self.app[SETTINGS].data_dir
        incoming = root / "dicom" / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=incoming, suffix=".dcm", delete=False) as out:
            out.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(out, event.file_meta)
            out.write(event.request.DataSet.getvalue())
        path = Path(out.name)
        peer = f"{event.assoc.requestor.address}:{event.assoc.requestor.ae_title}"
        future = asyncio.run_coroutine_threadsafe(self._file(path, peer), self.loop)
        try:
            return future.result(STORE_TIMEOUT)
        except Exception:
            log.exception("C-STORE from %s failed", peer)
            return UNFILED
        finally:
            path.unlink(missing_ok=True)

    async def _file(self, path: Path, peer: str) -> int:
        settings = self.app[SETTINGS]
        database = self.app[DATABASE]
        actor = await database.read(_actor, settings.dicom_account)
        if actor is None:
            log.error("dicom_account %r is not an active staff account", settings.dicom_account)
            return NOT_AUTHORIZED
        caller = Caller(actor, peer)
        try:
            instance = await asyncio.to_thread(archive.inspect, path)
            await ingest.admit(self.app, caller, instance, path)
        except DicomRejected as exc:
            log.warning("C-STORE from %s refused: %s", peer, exc)
            return CANNOT_UNDERSTAND
        except Forbidden as exc:
            await audit_refusal(database, exc)
            return NOT_AUTHORIZED
        except (NotFound, Conflict, InvalidRequest) as exc:
            log.warning("C-STORE from %s refused: %s", peer, exc)
            return UNFILED
        return SUCCESS


def _actor(conn, username: str | None):
    found = accounts.credentials(conn, username) if username else None
    return accounts.load_actor(conn, found["id"]) if found else None


SCP = web.AppKey("dicom_scp", StoreSCP)


async def _scp(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    scp = StoreSCP(app, asyncio.get_running_loop())
    app[SCP] = scp
    if settings.dicom_port:
        port = scp.start(settings.host, settings.dicom_port, settings.dicom_ae_title)
        log.info("DICOM C-STORE SCP %s listening on %s:%d", settings.dicom_ae_title,
                 settings.host, port)
    yield
    await asyncio.to_thread(scp.stop)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_scp)
