"""DICOMweb (PS3.18) over the archive: STOW-RS, QIDO-RS and WADO-RS, Bearer-authenticated.

Uploads stream part by part to temporary files (never whole in memory) under a size limit;
each instance is checked and filed on its own, so one bad part fails alone and nothing of it is
kept. Retrieval serves the stored bytes as they are when the client accepts the stored transfer
syntax; other transfer syntaxes answer 406 until the transcoding codecs are wired in.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pydicom
from aiohttp import MultipartWriter, hdrs, web
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from diagnosis.dicom import archive, qido, render
from diagnosis.dicom.archive import DicomRejected
from telemed.api.context import DATABASE, SETTINGS
from telemed.api.problems import ProblemError, audit_refusal
from telemed.api.security import authenticated
from telemed.caller import Caller, InvalidRequest
from telemed.permissions import Forbidden
from telemed.store import Conflict, NotFound

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
CHUNK = 256 * 1024
FAILED_NOT_AUTHORIZED, FAILED_CANNOT_UNDERSTAND, FAILED_PROCESSING = 0x0124, 0xC000, 0x0110


async def _spool(stream: Any, folder: Path, name: str, budget: list[int]) -> Path:
    """Copy one body or part to disk chunk by chunk, counting against the request's budget."""
    path = folder / name
    with path.open("wb") as out:
        while chunk := await stream.read_chunk(CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ProblemError(413, "Content Too Large", "the upload exceeds the size limit")
            await asyncio.to_thread(out.write, chunk)
    return path


async def _receive(request: web.Request, folder: Path) -> list[Path]:
    budget = [request.app[SETTINGS].max_upload_bytes]
    if request.content_type == "application/dicom":
        return [await _spool(request.content, folder, "0.dcm", budget)]
    if request.content_type != "multipart/related":
        raise ProblemError(415, "Unsupported Media Type",
                           'send multipart/related; type="application/dicom" or application/dicom')
    try:
        reader = await request.multipart()
        paths = []
        while (part := await reader.next()) is not None:
            if part.headers.get(hdrs.CONTENT_TYPE, "").split(";")[0].strip() != "application/dicom":
                raise ProblemError(415, "Unsupported Media Type", "every part must be application/dicom")
            paths.append(await _spool(part, folder, f"{len(paths)}.dcm", budget))
    except (ValueError, AssertionError) as exc:
        raise ProblemError(400, "Bad Request", f"the multipart body cannot be read: {exc}") from None
    if not paths:
        raise ProblemError(400, "Bad Request", "no DICOM parts found (check the boundary)")
    return paths


def _stow_item(instance: archive.Instance | None, base: str, failure: int | None) -> dict:
    item: dict[str, Any] = {}
    if instance is not None:
        item["00081150"] = {"vr": "UI", "Value": [instance.sop_class_uid]}
        item["00081155"] = {"vr": "UI", "Value": [instance.sop_instance_uid]}
        if failure is None:
            item["00081190"] = {"vr": "UR", "Value": [
                f"{base}/studies/{instance.study_uid}/series/{instance.series_uid}"
                f"/instances/{instance.sop_instance_uid}"]}
    if failure is not None:
        item["00081197"] = {"vr": "US", "Value": [failure]}
    return item


async def store(request: web.Request) -> web.Response:
    """STOW-RS (multipart/related) and plain application/dicom uploads."""
    caller = await authenticated(request)
    patient_id, consult_id = request.query.get("patient"), request.query.get("consult")
    root = request.app[SETTINGS].data_dir
    folder = Path(tempfile.mkdtemp(prefix="stow-", dir=_spool_dir(root)))
    stored, failed, problems = [], [], []
    try:
        for path in await _receive(request, folder):
            instance = None
            try:
                instance = await asyncio.to_thread(archive.inspect, path)
                await request.app[DATABASE].write(archive.admit, caller, instance, patient_id,
                                                  consult_id, root, path)
                stored.append(instance)
            except DicomRejected as exc:
                failed.append((instance, FAILED_CANNOT_UNDERSTAND))
                problems.append(str(exc))
            except Forbidden as exc:
                await audit_refusal(request.app[DATABASE], exc)
                failed.append((instance, FAILED_NOT_AUTHORIZED))
                problems.append(exc.reason)
            except (NotFound, Conflict, InvalidRequest) as exc:
                failed.append((instance, FAILED_PROCESSING))
                problems.append(str(exc))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = str(request.url.origin()) + "/dicomweb"
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_stow_item(i, base, None) for i in stored]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_stow_item(i, base, code) for i, code in failed]}
    status = 200 if not failed else 202 if stored else 409
    headers = {"Warning": "; ".join(f'299 telemed "{p}"' for p in problems)[:2000]} if problems else {}
    return web.json_response(body, status=status, content_type="application/dicom+json",
                             headers=headers)


def _spool_dir(root: Path) -> Path:
    path = root / "dicom" / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def search(request: web.Request) -> web.Response:
    """QIDO-RS at study, series or instance level, scoped by the path."""
    caller = await authenticated(request)
    level = request.match_info["level"]
    scope = {k: v for k, v in request.match_info.items() if k in ("study", "series")}
    try:
        query = qido.parse_query(level, request.query)
    except ValueError as exc:
        raise ProblemError(400, "Bad Request", str(exc)) from None
    where, params = qido.scope_clause(scope)
    rows = await request.app[DATABASE].write(archive.visible_instances, caller, where, params)
    base = str(request.url.origin()) + "/dicomweb"
    return web.json_response(qido.answer(level, rows, query, base),
                             content_type="application/dicom+json")


async def _instances(request: web.Request, caller: Caller) -> list[dict[str, Any]]:
    scope = {k: v for k, v in request.match_info.items() if k in ("study", "series", "instance")}
    where, params = qido.scope_clause(scope)
    rows = await request.app[DATABASE].write(archive.visible_instances, caller, where, params)
    if not rows:
        raise NotFound("DICOM object", "/".join(scope.values()))
    return rows


def accepted_transfer_syntax(accept: str, stored: set[str]) -> str:
    """'*' (as stored) or the one transfer syntax asked for; 406 when it cannot be served."""
    asked = re.findall(r'transfer-syntax="?([0-9.*]+)"?', accept)
    if not asked:
        asked = [EXPLICIT_VR_LITTLE_ENDIAN]
    for syntax in asked:
        if syntax == "*" or {syntax} >= stored:
            return syntax
    raise ProblemError(406, "Not Acceptable",
                       f"stored as {', '.join(sorted(stored))}; ask with transfer-syntax=* or one of "
                       "those (transcoding to other syntaxes is not available yet)")


async def retrieve(request: web.Request) -> web.StreamResponse:
    """WADO-RS: study, series or instance as multipart/related application/dicom."""
    caller = await authenticated(request)
    rows = await _instances(request, caller)
    syntax = accepted_transfer_syntax(request.headers.get("Accept", ""),
                                      {r["transfer_syntax_uid"] for r in rows})
    root = request.app[SETTINGS].data_dir
    writer = MultipartWriter("related")
    for row in rows:
        writer.append((root / row["path"]).open("rb"), {
            hdrs.CONTENT_TYPE: f"application/dicom; transfer-syntax={row['transfer_syntax_uid']}"})
    content_type = (f'multipart/related; type="application/dicom"; transfer-syntax={syntax}; '
                    f"boundary={writer.boundary}")
    return web.Response(body=writer, headers={hdrs.CONTENT_TYPE: content_type})


def _metadata(path: Path, base: str, row: dict[str, Any]) -> dict[str, Any]:
    ds = pydicom.dcmread(path)
    url = (f"{base}/studies/{row['study_uid']}/series/{row['series_uid']}/instances/"
           f"{row['sop_instance_uid']}/bulkdata")
    return ds.to_json_dict(bulk_data_threshold=1024,
                           bulk_data_element_handler=lambda elem: f"{url}/{elem.tag:08X}")


async def metadata(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    rows = await _instances(request, caller)
    base, root = str(request.url.origin()) + "/dicomweb", request.app[SETTINGS].data_dir
    body = [await asyncio.to_thread(_metadata, root / r["path"], base, r) for r in rows]
    return web.json_response(body, content_type="application/dicom+json")


def _frames(path: Path, wanted: list[int]) -> list[bytes]:
    ds = pydicom.dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if any(n < 1 or n > count for n in wanted):
        raise ProblemError(404, "Not Found", f"the instance has frames 1 to {count}")
    if UID(ds.file_meta.TransferSyntaxUID).is_encapsulated:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    else:
        size = len(ds.PixelData) // count
        frames = [ds.PixelData[i * size:(i + 1) * size] for i in range(count)]
    return [frames[n - 1] for n in wanted]


async def frames(request: web.Request) -> web.Response:
    """WADO-RS frames: raw (native) or the stored compressed frames with transfer-syntax=*."""
    caller = await authenticated(request)
    rows = await _instances(request, caller)
    row = rows[0]
    if not row["is_image"]:
        raise ProblemError(404, "Not Found", "this instance has no frames (not an image)")
    try:
        wanted = [int(n) for n in request.match_info["frames"].split(",")]
    except ValueError:
        raise ProblemError(400, "Bad Request", "frames are numbers separated by commas") from None
    stored = row["transfer_syntax_uid"]
    native = not UID(stored).is_encapsulated
    accept = request.headers.get("Accept", "")
    if not native:
        accepted_transfer_syntax(accept if "transfer-syntax" in accept else "transfer-syntax=none",
                                 {stored})
    data = await asyncio.to_thread(_frames, request.app[SETTINGS].data_dir / row["path"], wanted)
    media = "application/octet-stream" if native else _image_media_type(stored)
    writer = MultipartWriter("related")
    for chunk in data:
        writer.append(chunk, {hdrs.CONTENT_TYPE: f"{media}; transfer-syntax={stored}"
                              if not native else media})
    return web.Response(body=writer, headers={
        hdrs.CONTENT_TYPE: f'multipart/related; type="{media}"; boundary={writer.boundary}'})


def _render(path: Path, frame: int, window: render.Window | None, size: int | None,
            media: str) -> bytes:
    ds = pydicom.dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= count:
        raise ProblemError(404, "Not Found", f"the instance has frames 1 to {count}")
    try:
        return render.render(ds, frame, window, size, media)
    except (NotImplementedError, RuntimeError) as exc:
        raise ProblemError(406, "Not Acceptable",
                           f"this node cannot render {ds.file_meta.TransferSyntaxUID.name}: {exc}") from None


async def rendered(request: web.Request) -> web.Response:
    """WADO-RS rendered and thumbnail: PNG (default) or JPEG, window=centre,width."""
    caller = await authenticated(request)
    rows = await _instances(request, caller)
    row = rows[0]
    if not row["is_image"]:
        raise ProblemError(404, "Not Found", "this instance is not an image")
    media = "image/jpeg" if "image/jpeg" in request.headers.get("Accept", "") else "image/png"
    window = None
    if "window" in request.query:
        try:
            center, width = (float(v) for v in request.query["window"].split(",")[:2])
        except ValueError:
            raise ProblemError(400, "Bad Request", "window is centre,width (numbers)") from None
        if width <= 0:
            raise ProblemError(400, "Bad Request", "the window width must be positive")
        window = render.Window(center, width)
    size = 128 if request.match_info["view"] == "thumbnail" else None
    frame = int(request.match_info.get("frame", "1"))
    image = await asyncio.to_thread(_render, request.app[SETTINGS].data_dir / row["path"], frame,
                                    window, size, media)
    return web.Response(body=image, content_type=media)


def _image_media_type(syntax: str) -> str:
    return {"1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
            "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
            "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
            "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.4.50": "image/jpeg",
            "1.2.840.10008.1.2.4.70": "image/jpeg"}.get(syntax, "application/octet-stream")


def setup(app: web.Application) -> None:
    study, series = "/dicomweb/studies/{study}", "/dicomweb/studies/{study}/series/{series}"
    instance = series + "/instances/{instance}"
    app.router.add_post("/dicomweb/studies", store)
    app.router.add_post("/api/dicom", store)
    for prefix, levels in (("/dicomweb", "studies|series|instances"), (study, "series|instances"),
                           (series, "instances")):
        app.router.add_get(prefix + "/{level:" + levels + "}", search)
    for path in (study, series, instance):
        app.router.add_get(path, retrieve)
        app.router.add_get(path + "/metadata", metadata)
    app.router.add_get(instance + "/frames/{frames}", frames)
    app.router.add_get(instance + "/{view:rendered|thumbnail}", rendered)
    app.router.add_get(instance + "/frames/{frame:[0-9]+}/{view:rendered|thumbnail}", rendered)
