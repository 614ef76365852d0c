"""DICOMweb (PS3.18) over the archive: STOW-RS, QIDO-RS and WADO-RS, Bearer-authenticated.

Uploads stream part by part to temporary files (never whole in memory) under a size limit;
each instance is checked and filed on its own, so one bad part fails alone and nothing of it is
kept. Retrieval negotiates the transfer syntax through Accept (PS3.18): the stored bytes with
`transfer-syntax=*` or the stored syntax, else a lossless derivative made and cached by
`transcode` (Explicit VR Little Endian, JPEG-LS, JPEG 2000, HTJ2K, HTJ2K RPCL, JPEG XL, each
verified bit-exact); 406 only when nothing asked for can be served.

Lossy syntaxes (JPEG 2000 .91, HTJ2K .203, JPEG-LS near-lossless .81) are never a default: they
are made only when the Accept header names one, the caller's institution has the lossy imaging
policy on, and the modality has a CAR ratio cap; the served instance is labelled lossy (Lossy
Image Compression attributes), the response carries `X-Lossy`, and each lossy retrieval gets its
own audit entry (`dicom.read.lossy`, naming the syntax and the ratio).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp_cors
import pydicom
from aiohttp import MultipartWriter, hdrs, web

from diagnosis.dicom import archive, codecs, ingest, qido, render, transcode
from diagnosis.dicom.archive import DicomRejected
from diagnosis.dicom.transcode import TRANSCODER, transcoder_ctx
from telemed.api.context import DATABASE, SETTINGS
from telemed.api.problems import ProblemError, audit_refusal, problem_response
from telemed.api.security import authenticated
from telemed.caller import Caller, InvalidRequest
from telemed.permissions import Forbidden
from telemed.store import Conflict, NotFound, accounts

EXPLICIT_VR_LITTLE_ENDIAN = codecs.EXPLICIT_VR_LITTLE_ENDIAN
CHUNK = 256 * 1024
FAILED_NOT_AUTHORIZED, FAILED_CANNOT_UNDERSTAND, FAILED_PROCESSING = 0x0124, 0xC000, 0x0110
log = logging.getLogger(__name__)


async def _spool(read: Callable[[int], Awaitable[bytes]], folder: Path, name: str,
                 budget: list[int]) -> Path:
    """Copy one body or part to disk chunk by chunk, counting against the request's budget."""
    path = folder / name
    with path.open("wb") as out:
        while chunk := await read(CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ProblemError(413, "Content Too Large", "the upload exceeds the size limit")
            await asyncio.to_thread(out.write, chunk)
    return path


async def _receive(request: web.Request, folder: Path) -> list[Path]:
    budget = [request.app[SETTINGS].max_upload_bytes]
    if request.content_type == "application/dicom":
        return [await _spool(request.content.read, folder, "0.dcm", budget)]
    if request.content_type != "multipart/related":
        raise ProblemError(415, "Unsupported Media Type",
                           'send multipart/related; type="application/dicom" or application/dicom')
    try:
        reader = await request.multipart()
        paths = []
        while (part := await reader.next()) is not None:
            if part.headers.get(hdrs.CONTENT_TYPE, "").split(";")[0].strip() != "application/dicom":
                raise ProblemError(415, "Unsupported Media Type", "every part must be application/dicom")
            paths.append(await _spool(part.read_chunk, folder, f"{len(paths)}.dcm", budget))
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
                await ingest.admit(request.app, caller, instance, path, patient_id, consult_id)
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


@dataclass(frozen=True)
class Acceptable:
    """One media range of an Accept header: the (part) media type, its transfer-syntax
    parameter, whether it asked for multipart/related, and its q-value."""

    media: str
    syntax: str | None
    multipart: bool
    q: float


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_accept(header: str) -> list[Acceptable]:
    """Media ranges best first (q-value, then order); q=0 ranges are dropped."""
    found = []
    for order, item in enumerate(_split_outside_quotes(header, ",")):
        main, *rest = _split_outside_quotes(item, ";")
        params = {}
        for param in rest:
            key, _, value = param.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        main = main.lower()
        multipart = main == "multipart/related"
        media = params.get("type", "*").lower() if multipart else main
        if media in ("*/*", "*"):
            media, multipart = "*", True  # anything: the default (multipart) representation
        if q > 0:
            syntax = params.get("transfer-syntax")
            found.append((-q, order, Acceptable(media, syntax, multipart, q)))
    return [a for _q, _order, a in sorted(found, key=lambda t: (t[0], t[1]))]


def _offered() -> str:
    return ("transfer-syntax=* (as stored) or one of " + ", ".join(codecs.lossless_targets())
            + " (lossy " + ", ".join(codecs.lossy_targets()) + " only where your institution's "
            "lossy imaging policy is on, asked for by name)")


POLICY_OFF = ("lossy images are served only under an explicit per-institution policy, and it is "
              "off for your institution (an administrator turns it on with PATCH "
              '/api/institutions/{id} {"lossy_imaging": true})')


@dataclass(frozen=True)
class Served:
    """What negotiation chose: the syntax ("" when the parts differ), each row's (file,
    syntax), and for every row made lossy its row and sidecar (ratio, cap, method)."""

    syntax: str
    files: list[tuple[Path, str]]
    lossy: list[tuple[dict[str, Any], dict[str, Any]]]


def _made_lossy(row: dict[str, Any], syntax: str) -> bool:
    """Whether serving `row` in `syntax` means making a lossy derivative (images only; an image
    stored in that syntax is sent as stored, untouched)."""
    return (syntax in codecs.LOSSY_ENCODERS and bool(row["is_image"])
            and row["transfer_syntax_uid"] != syntax)


async def _lossy_allowed(request: web.Request, caller: Caller) -> bool:
    return await request.app[DATABASE].read(accounts.lossy_imaging_allowed,
                                            caller.actor.institution_id)


async def _negotiate(request: web.Request, caller: Caller, rows: list[dict[str, Any]],
                     candidates: list[str]) -> Served:
    """The first candidate syntax in which every row can be served, with each row's file."""
    transcoder, reasons = request.app[TRANSCODER], []
    policy: bool | None = None
    for syntax in dict.fromkeys(candidates):
        lossy = [r for r in rows if _made_lossy(r, syntax)]
        if lossy:
            if policy is None:
                policy = await _lossy_allowed(request, caller)
            why = POLICY_OFF if not policy else next(
                (w for r in lossy if (w := transcode.lossy_refusal(r, syntax))), None)
        else:
            why = next((w for r in rows if (w := transcode.servable(r, syntax))), None)
        if why is None:
            try:
                return await _gather(transcoder, rows, syntax)
            except transcode.NotTranscodable as exc:
                why = str(exc)
            except (codecs.LosslessMismatch, transcode.TranscodeFailed) as exc:
                raise _refused_to_serve(syntax, exc) from None
        reasons.append(f"{syntax}: {why}")
    asked = "; ".join(reasons) or "no application/dicom media range"
    raise ProblemError(406, "Not Acceptable", f"cannot serve what was asked ({asked}); "
                                              f"ask with {_offered()}")


def _refused_to_serve(what: str, exc: Exception) -> ProblemError:
    """A derivative failed its check or its worker died: a 500, and nothing is sent."""
    log.error("transcoding refused to serve %s: %s", what, exc)
    return ProblemError(500, "Internal Server Error", f"{exc}; nothing was served")


async def _smallest(transcoder: transcode.Transcoder, rows: list[dict[str, Any]],
                    syntaxes: list[str]) -> Served | None:
    """Full transfers when the client accepts several lossless syntaxes equally: each instance
    in whichever codes it smallest (parts name their own syntax; the whole names one only when
    all agree). None when some instance fits none of them: negotiation decides then."""
    try:
        files = await asyncio.gather(*(transcoder.smallest(row, syntaxes) for row in rows))
    except transcode.NotTranscodable:
        return None
    except (codecs.LosslessMismatch, transcode.TranscodeFailed) as exc:
        raise _refused_to_serve(f"the smallest of {', '.join(syntaxes)}", exc) from None
    used = {syntax for _path, syntax in files}
    return Served(used.pop() if len(used) == 1 else "", files, [])


async def _gather(transcoder: transcode.Transcoder, rows: list[dict[str, Any]],
                  syntax: str) -> Served:
    async def one(row: dict[str, Any]) -> tuple[Path, str, dict[str, Any] | None]:
        if _made_lossy(row, syntax):
            path, info = await transcoder.lossy_instance(row, syntax)
            return path, syntax, info
        path, actual = await transcoder.instance(row, syntax)
        return path, actual, None

    found = await asyncio.gather(*(one(r) for r in rows))
    return Served(syntax, [(path, actual) for path, actual, _info in found],
                  [(row, info) for row, (_p, _a, info) in zip(rows, found) if info is not None])


def _audit_lossy(conn: Any, caller: Caller, served: Served) -> None:
    for row, info in served.lossy:
        caller.audit(conn, "dicom.read.lossy",
                     f"instance:{row['sop_instance_uid']};transfer-syntax={info['syntax']};"
                     f"ratio={info['lossy']['ratio']:.2f};cap={info['lossy']['cap']:g}",
                     row["patient_id"])


async def _record_lossy(request: web.Request, caller: Caller, served: Served) -> dict[str, str]:
    """Audit every lossy instance before anything is sent; the `X-Lossy` header for it."""
    if not served.lossy:
        return {}
    await request.app[DATABASE].write(_audit_lossy, caller, served)
    return {X_LOSSY: _lossy_header([info for _row, info in served.lossy])}


X_LOSSY = "X-Lossy"


def _lossy_header(infos: list[dict[str, Any]]) -> str:
    """`ratio=` (the highest among the instances), `cap=`, `method=`, `transfer-syntax=`."""
    worst = max(infos, key=lambda i: i["lossy"]["ratio"])
    stats = worst["lossy"]
    return (f"ratio={stats['ratio']:.2f}; cap={stats['cap']:g}; method={stats['method']}; "
            f"transfer-syntax={worst['syntax']}")


async def retrieve(request: web.Request) -> web.StreamResponse:
    """WADO-RS: study, series or instance as multipart/related application/dicom, in the first
    acceptable transfer syntax (default Explicit VR Little Endian; `*` as stored), or, when
    JPEG-LS, HTJ2K and JPEG XL are accepted equally, each instance in the smallest of them.
    Objects without pixel data are always sent as stored."""
    caller = await authenticated(request)
    rows = await _instances(request, caller)
    accept = parse_accept(request.headers.get("Accept", "")) or [
        Acceptable("application/dicom", None, True, 1.0)]
    candidates = [a.syntax or EXPLICIT_VR_LITTLE_ENDIAN for a in accept
                  if a.media in ("application/dicom", "*")]
    best = [a.syntax for a in accept
            if a.q == accept[0].q and a.media in ("application/dicom", "*")]
    choice = [s for s in dict.fromkeys(best) if s in codecs.SMALLEST_CANDIDATES]
    served = await _smallest(request.app[TRANSCODER], rows, choice) if len(choice) > 1 else None
    if served is None:
        served = await _negotiate(request, caller, rows, candidates)
    headers = await _record_lossy(request, caller, served)
    lossy = {id(row): info for row, info in served.lossy}
    writer = MultipartWriter("related")
    for row, (path, actual) in zip(rows, served.files):
        part = {hdrs.CONTENT_TYPE: f"application/dicom; transfer-syntax={actual}"}
        if id(row) in lossy:
            part[X_LOSSY] = _lossy_header([lossy[id(row)]])
        writer.append(path.open("rb"), part)
    syntax = f"transfer-syntax={served.syntax}; " if served.syntax else ""
    content_type = (f'multipart/related; type="application/dicom"; {syntax}'
                    f"boundary={writer.boundary}")
    return web.Response(body=writer, headers={hdrs.CONTENT_TYPE: content_type, **headers})


def _metadata(path: Path, base: str, row: dict[str, Any]) -> dict[str, Any]:
    ds = pydicom.dcmread(path)
    url = (f"{base}/studies/{row['study_uid']}/series/{row['series_uid']}/instances/"
           f"{row['sop_instance_uid']}/bulkdata")
    return ds.to_json_dict(bulk_data_threshold=1024,
                           bulk_data_element_handler=lambda elem: f"{url}/{elem.tag:08X}")


def _bulk_value(path: Path, tag: int) -> bytes:
    """The value of the element a metadata BulkDataURI names: top level first, else the first
    one inside a sequence (the URI carries only the tag)."""
    ds = pydicom.dcmread(path)
    found = ds.get(tag) or next((e for e in ds.iterall() if e.tag == tag), None)
    if found is None or not isinstance(found.value, bytes):
        raise ProblemError(404, "Not Found", f"no bulk data element ({tag:08X}) in this instance")
    return found.value


async def bulkdata(request: web.Request) -> web.Response:
    """WADO-RS bulk data: the BulkDataURIs of the metadata resolve here."""
    caller = await authenticated(request)
    row = (await _instances(request, caller))[0]
    try:
        tag = int(request.match_info["tag"], 16)
    except ValueError:
        raise ProblemError(400, "Bad Request", "the tag is 8 hexadecimal digits") from None
    value = await asyncio.to_thread(_bulk_value, request.app[SETTINGS].data_dir / row["path"], tag)
    writer = MultipartWriter("related")
    writer.append(value, {hdrs.CONTENT_TYPE: "application/octet-stream"})
    return web.Response(body=writer, headers={hdrs.CONTENT_TYPE: (
        f'multipart/related; type="application/octet-stream"; boundary={writer.boundary}')})


async def metadata(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    rows = await _instances(request, caller)
    base, root = str(request.url.origin()) + "/dicomweb", request.app[SETTINGS].data_dir
    body = [await asyncio.to_thread(_metadata, root / r["path"], base, r) for r in rows]
    return web.json_response(body, content_type="application/dicom+json")


def _frame_choices(accept: list[Acceptable], stored: str) -> list[tuple[str, Acceptable]]:
    """(transfer syntax, media range) pairs for frames, per PS3.18 table 8.7.3-2."""
    choices = []
    for item in accept:
        media = item.media
        if item.syntax == transcode.AS_STORED:
            choices.append((stored, item))
        elif media == "*":
            choices.append((item.syntax or EXPLICIT_VR_LITTLE_ENDIAN, item))
        elif media in codecs.MEDIA_TYPES:
            default, allowed = codecs.MEDIA_TYPES[media]
            if (item.syntax or default) in allowed:
                choices.append((item.syntax or default, item))
    return choices


async def frames(request: web.Request) -> web.StreamResponse:
    """WADO-RS frames in the first acceptable media type and transfer syntax: raw
    (application/octet-stream, the default), image/jls, image/jp2, image/jphc, image/jxl, or as
    stored with transfer-syntax=*. One frame asked with a single-part media type (not
    multipart) is sent bare and honours Range (206)."""
    caller = await authenticated(request)
    rows = await _instances(request, caller)
    row = rows[0]
    if not row["is_image"]:
        raise ProblemError(404, "Not Found", "this instance has no frames (not an image)")
    try:
        wanted = [int(n) for n in request.match_info["frames"].split(",")]
    except ValueError:
        raise ProblemError(400, "Bad Request", "frames are numbers separated by commas") from None
    if any(n < 1 or n > max(row["frames"], 1) for n in wanted):
        raise ProblemError(404, "Not Found", f"the instance has frames 1 to {row['frames']}")
    stored = row["transfer_syntax_uid"]
    accept = parse_accept(request.headers.get("Accept", "")) or [
        Acceptable("application/octet-stream", None, True, 1.0)]
    choices = [(s, a) for s, a in _frame_choices(accept, stored)
               if a.multipart or len(wanted) == 1]
    if not choices:
        raise ProblemError(406, "Not Acceptable", "ask for multipart/related with type "
                           f"{', '.join(codecs.MEDIA_TYPES)} (single part for one frame); "
                           + _offered())
    keyed: dict[str, tuple[str, Acceptable]] = {}
    for syntax, item in choices:  # stored native little endian bytes are raw frames as they are
        native = syntax == EXPLICIT_VR_LITTLE_ENDIAN and stored in transcode.NATIVE_LITTLE_ENDIAN
        keyed.setdefault(stored if native else syntax, (syntax, item))
    served = await _negotiate(request, caller, [row], list(keyed))
    ((path, source_syntax),) = served.files
    syntax, chosen = keyed[served.syntax]
    _count, data = await asyncio.to_thread(transcode.read_frames, path, source_syntax, wanted)
    lossy = await _record_lossy(request, caller, served)
    media = codecs.media_type(syntax)
    part_type = f"{media}; transfer-syntax={syntax}"
    if not chosen.multipart:
        return _single_part(request, data[0], part_type, lossy)
    writer = MultipartWriter("related")
    for chunk in data:
        writer.append(chunk, {hdrs.CONTENT_TYPE: part_type, **lossy})
    return web.Response(body=writer, headers={
        hdrs.CONTENT_TYPE: f'multipart/related; type="{media}"; transfer-syntax={syntax}; '
                           f"boundary={writer.boundary}", **lossy})


def _single_part(request: web.Request, data: bytes, content_type: str,
                 extra: dict[str, str] | None = None) -> web.Response:
    """One frame, bare; `Range: bytes=a-b` answers 206 with that slice (e.g. the first
    resolutions of an HTJ2K RPCL code stream), unsatisfiable ranges 416."""
    headers = {hdrs.CONTENT_TYPE: content_type, hdrs.ACCEPT_RANGES: "bytes", **(extra or {})}
    if hdrs.RANGE not in request.headers:
        return web.Response(body=data, headers=headers)
    try:
        wanted = request.http_range
    except ValueError:
        return web.Response(body=data, headers=headers)  # a range we do not parse is ignored
    total = len(data)
    start = wanted.start if wanted.start is not None else 0
    start = max(0, total + start) if start < 0 else start
    stop = total if wanted.stop is None else min(wanted.stop, total)
    if start >= total or start >= stop:
        return problem_response(request, 416, "Range Not Satisfiable",
                                f"the frame has {total} bytes",
                                headers={hdrs.CONTENT_RANGE: f"bytes */{total}"})
    headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{stop - 1}/{total}"
    return web.Response(status=206, body=data[start:stop], headers=headers)


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


def _allow_viewer_origins(app: web.Application, routes: list[web.AbstractRoute]) -> None:
    """CORS for browser viewers on other origins (OHIF): they send the Bearer token in an
    Authorization header, so each request is preflighted; no cookies are involved."""
    origins = app[SETTINGS].dicom_viewer_origins
    if not origins:
        return
    options = aiohttp_cors.ResourceOptions(allow_headers="*", expose_headers="*", max_age=3600)
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for route in routes:
        cors.add(route)


def setup(app: web.Application) -> None:
    before = set(app.router.routes())
    app.cleanup_ctx.append(transcoder_ctx)
    study, series = "/dicomweb/studies/{study}", "/dicomweb/studies/{study}/series/{series}"
    instance = series + "/instances/{instance}"
    studies = app.router.add_resource("/dicomweb/{level:studies}")  # a preflight sees GET+POST
    studies.add_route("GET", search)
    studies.add_route("HEAD", search)
    studies.add_route("POST", store)
    app.router.add_post("/api/dicom", store)
    for prefix, levels in (("/dicomweb", "series|instances"), (study, "series|instances"),
                           (series, "instances")):
        app.router.add_get(prefix + "/{level:" + levels + "}", search)
    for path in (study, series, instance):
        app.router.add_get(path, retrieve)
        app.router.add_get(path + "/metadata", metadata)
    app.router.add_get(instance + "/frames/{frames}", frames)
    app.router.add_get(instance + "/bulkdata/{tag:[0-9A-Fa-f]{8}}", bulkdata)
    app.router.add_get(instance + "/{view:rendered|thumbnail}", rendered)
    app.router.add_get(instance + "/frames/{frame:[0-9]+}/{view:rendered|thumbnail}", rendered)
    _allow_viewer_origins(app, [r for r in app.router.routes() if r not in before])
