"""STOW-RS, QIDO-RS and WADO-RS on the real files in ../shared/data/dicom: what goes in comes
back byte for byte, searches find it, and bad uploads are refused whole, leaving nothing."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from aiohttp import MultipartReader, hdrs
from pydicom.filereader import data_element_generator

from diagnosis.dicom.transcode import decode_frames
from telemed.store import accounts
from telemed.store.database import connect

EXPLICIT_LE = "1.2.840.10008.1.2.1"


async def parts(response) -> list[bytes]:
    reader = MultipartReader.from_response(response)
    found = []
    while (part := await reader.next()) is not None:
        found.append(bytes(await part.read(decode=False)))
    return found


@pytest.fixture
def files(shared_data) -> list[Path]:
    return sorted((shared_data / "dicom").glob("*/*.dcm"))


@pytest.fixture
def archive_world(world, files):
    """Every DICOM Patient ID in the data registered as a patient of the township."""
    conn = connect(world.data_dir / "telemed.sqlite3")
    for path in files:
        patient_id = pydicom.dcmread(path, stop_before_pixels=True).get("PatientID") or "ANON-1"
        try:
            accounts.get_patient(conn, patient_id)
        except LookupError:
            accounts.create_patient(conn, {"id": patient_id, "name": patient_id, "sex": "U",
                                           "home_institution_id": world.institutions["township"]})
    conn.close()
    return world


def stored_count(world) -> tuple[int, int]:
    with world.db() as conn:
        rows = conn.execute("SELECT COUNT(*) FROM dicom_instances").fetchone()[0]
    files = [p for p in (world.data_dir / "dicom").rglob("*.dcm")
             if "incoming" not in p.parts] if (world.data_dir / "dicom").exists() else []
    return rows, len(files)


def uid_of(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


async def test_every_file_round_trips_byte_exact(archive_world, files):
    world = archive_world
    named = [p for p in files if pydicom.dcmread(p, stop_before_pixels=True).get("PatientID")]
    anonymous = [p for p in files if p not in named]
    status, body = await world.stow(named)
    assert status == 200, body
    assert len(body["00081199"]["Value"]) == len(named) and "00081198" not in body
    status, body = await world.stow(anonymous, query="?patient=ANON-1")
    assert status == 200, body
    assert stored_count(world) == (len(files), len(files))
    for path in files:
        study, series, sop = uid_of(path)
        response = await world.client.get(
            f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
                     **world.auth("clinician")})
        assert response.status == 200, path.name
        (blob,) = await parts(response)
        assert hashlib.sha256(blob).digest() == hashlib.sha256(path.read_bytes()).digest(), path.name
    again, body = await world.stow([files[0]])
    assert again == 200, "re-sending identical bytes is accepted without a second copy"
    assert stored_count(world) == (len(files), len(files))


async def test_qido_finds_what_was_stored(archive_world, files):
    world = archive_world
    ct = [p for p in files if p.parent.name == "ct-head-ge"]
    await world.stow(ct)
    await world.stow([next(p for p in files if p.name == "MR2_UNCR.dcm").read_bytes()])
    auth = world.auth("clinician")
    studies = await (await world.client.get("/dicomweb/studies?PatientID=QMNx85rKkkg",
                                            headers=auth)).json(content_type=None)
    assert len(studies) == 1
    study = studies[0]
    assert study["00201208"]["Value"] == [28] and study["00080061"]["Value"] == ["CT"]
    study_uid = study["0020000D"]["Value"][0]
    mr = await (await world.client.get("/dicomweb/studies?ModalitiesInStudy=MR",
                                       headers=auth)).json(content_type=None)
    date = mr[0]["00080020"]["Value"][0]
    for query, expected in ((f"StudyDate={date}", 1), (f"StudyDate={date}-", 1),
                            ("StudyDate=-19000101", 0), ("ModalitiesInStudy=CT", 1),
                            ("ModalitiesInStudy=MR", 1), ("PatientID=QMN*", 1),
                            (f"0020000D={study_uid}", 1), ("PatientID=nobody", 0)):
        response = await world.client.get(f"/dicomweb/studies?{query}", headers=auth)
        assert len(await response.json(content_type=None)) == expected, query
    series = await (await world.client.get(f"/dicomweb/studies/{study_uid}/series",
                                           headers=auth)).json(content_type=None)
    assert len(series) == 1 and series[0]["00201209"]["Value"] == [28]
    series_uid = series[0]["0020000E"]["Value"][0]
    instances = await (await world.client.get(
        f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances?limit=5&offset=25",
        headers=auth)).json(content_type=None)
    assert len(instances) == 3
    response = await world.client.get("/dicomweb/studies?Colour=blue", headers=auth)
    assert response.status == 400
    response = await world.client.get("/dicomweb/studies?SOPInstanceUID=1.2", headers=auth)
    assert response.status == 400


async def test_wado_negotiates_transfer_syntax_and_serves_metadata_and_frames(archive_world, files):
    world = archive_world
    by_name = {p.name: p for p in files}
    await world.stow([by_name[n].read_bytes() for n in ("01.dcm", "RG3_J2KR.dcm",
                                                         "eCT_Supplemental.dcm")])
    auth = world.auth("clinician")
    study, series, sop = uid_of(by_name["01.dcm"])
    url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    default = await world.client.get(url, headers=auth)
    assert default.status == 200 and f"transfer-syntax={EXPLICIT_LE}" in default.headers[
        "Content-Type"]
    j2k = "/dicomweb/studies/{}/series/{}/instances/{}".format(*uid_of(by_name["RG3_J2KR.dcm"]))
    decompressed = await world.client.get(j2k, headers=auth)
    assert decompressed.status == 200, "stored JPEG 2000 is sent decompressed by default"
    (blob,) = await parts(decompressed)
    assert pydicom.dcmread(io.BytesIO(blob)).file_meta.TransferSyntaxUID == EXPLICIT_LE
    refused = await world.client.get(j2k, headers={
        "Accept": 'multipart/related; type="application/dicom"; '
                  "transfer-syntax=1.2.840.10008.1.2.4.50", **auth})
    assert refused.status == 406, "lossy output is never made"
    assert "transfer-syntax=*" in (await refused.json(content_type=None))["detail"]
    metadata = await (await world.client.get(url + "/metadata", headers=auth)).json(
        content_type=None)
    assert metadata[0]["00080018"]["Value"] == [sop]
    assert metadata[0]["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    original = pydicom.dcmread(by_name["01.dcm"])
    bulk = metadata[0]["7FE00010"]["BulkDataURI"].split("/dicomweb", 1)[1]
    (pixels,) = await parts(await world.client.get("/dicomweb" + bulk, headers=auth))
    assert pixels == original.PixelData
    assert (await world.client.get(url + "/bulkdata/00100010", headers=auth)).status == 404
    frame = await world.client.get(url + "/frames/1", headers=auth)
    (raw,) = await parts(frame)
    assert raw == original.PixelData
    assert (await world.client.get(url + "/frames/2", headers=auth)).status == 404
    multi = "/dicomweb/studies/{}/series/{}/instances/{}".format(
        *uid_of(by_name["eCT_Supplemental.dcm"]))
    both = await parts(await world.client.get(multi + "/frames/1,2", headers=auth))
    enhanced = pydicom.dcmread(by_name["eCT_Supplemental.dcm"])
    assert b"".join(both) == enhanced.PixelData[:len(b"".join(both))] and len(both) == 2
    compressed = await world.client.get(j2k + "/frames/1", headers={
        "Accept": 'multipart/related; type="image/jp2"; transfer-syntax=*', **auth})
    assert compressed.status == 200
    (codestream,) = await parts(compressed)
    assert codestream.startswith(b"\xff\x4f\xff\x51")


async def test_non_image_objects_are_stored_and_indexed_not_rendered(archive_world, shared_data):
    world = archive_world
    ecg = shared_data / "ecg" / "dicom" / "waveform_ecg.dcm"
    conn = connect(world.data_dir / "telemed.sqlite3")
    accounts.create_patient(conn, {"id": "642341", "name": "ECG", "sex": "U",
                                   "home_institution_id": world.institutions["township"]})
    conn.close()
    status, _ = await world.stow([ecg])
    assert status == 200
    study, series, sop = uid_of(ecg)
    found = await (await world.client.get("/dicomweb/studies?ModalitiesInStudy=ECG",
                                          headers=world.auth("clinician"))).json(content_type=None)
    assert len(found) == 1
    response = await world.client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1",
        headers=world.auth("clinician"))
    assert response.status == 404


@pytest.mark.parametrize("cut", [132, 400, 1000, 5000, 0.5, -1])
async def test_truncated_files_are_refused_and_nothing_is_kept(archive_world, files, cut):
    world = archive_world
    for path in (files[0], next(p for p in files if p.name == "RG3_J2KR.dcm")):
        blob = path.read_bytes()
        end = int(len(blob) * cut) if isinstance(cut, float) else cut
        status, body = await world.stow([blob[:end]])
        assert status == 409, (path.name, end, body)
        assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert stored_count(world) == (0, 0)


async def test_every_element_boundary_cut_is_refused(archive_world, files):
    """pydicom reads a file cut between two elements without complaint; the archive does not."""
    world = archive_world
    blob = files[0].read_bytes()
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    stream = io.BytesIO(blob)
    stream.seek(132 + 12 + ds.file_meta.FileMetaInformationGroupLength)
    boundaries = []
    for _ in data_element_generator(stream, False, True, defer_size=1):
        boundaries.append(stream.tell())
    bodies = [blob[:b] for b in boundaries[:-1]]
    status, body = await world.stow(bodies)
    assert status == 409 and len(body["00081198"]["Value"]) == len(bodies)
    assert stored_count(world) == (0, 0)


@pytest.mark.parametrize("blob", [b"not dicom at all", b"\x89PNG\r\n\x1a\n" + bytes(300),
                                  bytes(128) + b"DICM" + bytes(20)])
async def test_non_dicom_bytes_are_refused(archive_world, blob):
    status, body = await archive_world.stow([blob])
    assert status == 409
    assert stored_count(archive_world) == (0, 0)


async def test_mixed_upload_keeps_only_the_good_instances(archive_world, files):
    status, body = await archive_world.stow([files[0].read_bytes(), b"garbage",
                                              files[1].read_bytes()[:9000]])
    assert status == 202
    assert len(body["00081199"]["Value"]) == 1 and len(body["00081198"]["Value"]) == 2
    assert stored_count(archive_world) == (1, 1)


async def test_malformed_multipart_and_media_types(archive_world, files):
    world = archive_world
    body, _ = await world.stow_body([files[0]])
    wrong = {hdrs.CONTENT_TYPE: 'multipart/related; type="application/dicom"; boundary=nope'}
    response = await world.client.post("/dicomweb/studies", data=body,
                                       headers={**wrong, **world.auth("clinician")})
    assert response.status == 400
    assert (await response.json(content_type=None))["title"] == "Bad Request"
    response = await world.client.post("/dicomweb/studies", data=b"x",
                                       headers={hdrs.CONTENT_TYPE: "text/plain",
                                                **world.auth("clinician")})
    assert response.status == 415
    status, _ = await world.stow([files[0]], part_type="text/plain")
    assert status == 415
    assert stored_count(world) == (0, 0)


async def test_access_follows_patient_permissions(archive_world, files):
    world = archive_world
    status, body = await world.stow([files[0]], who="other_clinician")
    assert status == 409 and body["00081198"]["Value"][0]["00081197"]["Value"] == [0x0124]
    assert stored_count(world) == (0, 0)
    await world.stow([files[0]])
    study, series, sop = uid_of(files[0])
    for who in ("other_clinician", "cardiologist"):
        found = await (await world.client.get("/dicomweb/studies",
                                              headers=world.auth(who))).json(content_type=None)
        assert found == []
        response = await world.client.get(f"/dicomweb/studies/{study}", headers=world.auth(who))
        assert response.status == 404
    response = await world.client.get("/dicomweb/studies")
    assert response.status == 401
    entries = (await world.call("GET", "/api/audit", "admin", expect=200))["entries"]
    assert ("other_clinician", "dicom.store", "denied") in [
        (e["actor"], e["action"], e["outcome"]) for e in entries]


async def test_unknown_uids_are_404(archive_world):
    auth = archive_world.auth("clinician")
    for path in ("/dicomweb/studies/1.2.3", "/dicomweb/studies/1.2.3/series/4.5",
                 "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/metadata",
                 "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/1"):
        response = await archive_world.client.get(path, headers=auth)
        assert response.status == 404, path


async def test_upload_links_study_to_consult_and_names_patient(archive_world, files):
    world = archive_world
    ct = files[0]
    patient = pydicom.dcmread(ct, stop_before_pixels=True).PatientID
    consult = await world.request_consult(patient_id=patient, specialty="radiology")
    status, _ = await world.stow([ct], query=f"?consult={consult['id']}")
    assert status == 200
    refreshed = await world.call("GET", f"/api/consults/{consult['id']}", "clinician", expect=200)
    assert [(a["kind"], a["ref"]) for a in refreshed["attachments"]] == [("study", uid_of(ct)[0])]
    found = await (await world.client.get("/dicomweb/studies",
                                          headers=world.auth("radiologist"))).json(content_type=None)
    assert len(found) == 1, "the radiologist offered the consult sees its study"
    status, body = await world.stow([files[1]], query="?patient=P-1")
    assert status == 409, "a Patient ID in the file that differs from the one named is refused"


async def test_rendered_and_thumbnail_views(archive_world, files):
    import imagecodecs
    import numpy as np
    from pydicom.pixels import apply_modality_lut
    world = archive_world
    by_name = {p.name: p for p in files}
    await world.stow([by_name[n].read_bytes() for n in ("01.dcm", "RG3_J2KR.dcm",
                                                         "US1_UNCR.dcm", "eCT_Supplemental.dcm")])
    await world.stow([by_name["emri_small_jpeg_ls_lossless.dcm"].read_bytes()],
               query="?patient=ANON-1")
    auth = world.auth("clinician")

    def url(name: str) -> str:
        return "/dicomweb/studies/{}/series/{}/instances/{}".format(*uid_of(by_name[name]))

    response = await world.client.get(url("01.dcm") + "/rendered?window=40,80", headers=auth)
    assert response.status == 200 and response.content_type == "image/png"
    image = imagecodecs.png_decode(await response.read())
    ds = pydicom.dcmread(by_name["01.dcm"])
    hu = apply_modality_lut(ds.pixel_array, ds)
    expected = np.clip(np.round((hu - (40 - 0.5 - 79 / 2)) / 79 * 255), 0, 255).astype(np.uint8)
    assert image.shape == (512, 512) and np.array_equal(image, expected)
    thumb = await world.client.get(url("01.dcm") + "/thumbnail", headers=auth)
    assert max(imagecodecs.png_decode(await thumb.read()).shape) <= 128
    jpeg = await world.client.get(url("RG3_J2KR.dcm") + "/rendered",
                                  headers={"Accept": "image/jpeg", **auth})
    assert jpeg.status == 200 and (await jpeg.read())[:2] == b"\xff\xd8"
    colour = imagecodecs.png_decode(await (await world.client.get(
        url("US1_UNCR.dcm") + "/rendered", headers=auth)).read())
    assert colour.shape == (480, 640, 3)
    second = await world.client.get(url("eCT_Supplemental.dcm") + "/frames/2/rendered",
                                    headers=auth)
    assert second.status == 200
    assert (await world.client.get(url("eCT_Supplemental.dcm") + "/frames/3/rendered",
                                   headers=auth)).status == 404
    for bad in ("window=abc", "window=40,0"):
        assert (await world.client.get(url("01.dcm") + f"/rendered?{bad}",
                                       headers=auth)).status == 400
    unsupported = await world.client.get(url("emri_small_jpeg_ls_lossless.dcm") + "/rendered",
                                         headers=auth)
    assert unsupported.status == 406


async def test_a_plain_application_dicom_upload_is_stored(archive_world, files):
    """POST /api/dicom with one application/dicom body (no multipart): stored byte-exact."""
    world = archive_world
    path = next(p for p in files if pydicom.dcmread(p, stop_before_pixels=True).get("PatientID"))
    blob = path.read_bytes()
    response = await world.client.post("/api/dicom", data=blob, headers={
        "Content-Type": "application/dicom", **world.auth("clinician")})
    assert response.status == 200, await response.text()
    study, series, sop = uid_of(path)
    stored = await world.client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
                 **world.auth("clinician")})
    assert stored.status == 200
    assert blob in await stored.read()
    truncated = await world.client.post("/api/dicom", data=blob[:len(blob) // 2], headers={
        "Content-Type": "application/dicom", **world.auth("clinician")})
    assert truncated.status in (400, 409, 422), await truncated.text()
    assert stored_count(world) == (1, 1)


VIEWER_ORIGIN = "http://viewer.hospital.test:3000"


@pytest.mark.settings(dicom_viewer_origins=(VIEWER_ORIGIN,))
async def test_a_viewer_on_another_origin_reads_a_study_as_ohif_does(archive_world, files):
    """The requests OHIF v3's DICOMweb data source makes, from its own origin, with a Bearer
    token: preflight, QIDO studies/series with its paging and includefield, series metadata,
    frames as stored. Other origins get no CORS grant."""
    world = archive_world
    ct = sorted(p for p in files if p.parent.name == "ct-head-ge")[:3]
    await world.stow(ct)
    auth, origin = world.auth("clinician"), {"Origin": VIEWER_ORIGIN}
    preflight = await world.client.options("/dicomweb/studies", headers={
        **origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,accept"})
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == VIEWER_ORIGIN
    assert "AUTHORIZATION" in preflight.headers["Access-Control-Allow-Headers"].upper()

    async def get(path: str, accept: str = "application/dicom+json"):
        response = await world.client.get(path, headers={**auth, **origin, "Accept": accept})
        assert response.status == 200, (path, await response.text())
        assert response.headers["Access-Control-Allow-Origin"] == VIEWER_ORIGIN
        return response

    studies = await (await get("/dicomweb/studies?limit=101&offset=0&fuzzymatching=false"
                               "&includefield=00081030%2C00080060&PatientID=QMNx85rKkkg")
                     ).json(content_type=None)
    study = studies[0]["0020000D"]["Value"][0]
    series = await (await get(f"/dicomweb/studies/{study}/series?includefield=0008103E"
                              )).json(content_type=None)
    series_uid = series[0]["0020000E"]["Value"][0]
    metadata = await (await get(f"/dicomweb/studies/{study}/series/{series_uid}/metadata")
                      ).json(content_type=None)
    assert len(metadata) == 3
    sop = metadata[0]["00080018"]["Value"][0]
    frame = await get(f"/dicomweb/studies/{study}/series/{series_uid}/instances/{sop}/frames/1",
                      'multipart/related; type="application/octet-stream"; transfer-syntax=*')
    (pixels,) = await parts(frame)
    original = next(pydicom.dcmread(p) for p in ct if uid_of(p)[2] == sop)
    assert pixels == original.PixelData

    refused = await world.client.get("/dicomweb/studies", headers={
        **auth, "Origin": "http://elsewhere.test"})
    assert refused.status == 200 and "Access-Control-Allow-Origin" not in refused.headers
    unauthenticated = await world.client.get("/dicomweb/studies", headers=origin)
    assert unauthenticated.status == 401, "the grant is for reading the error, not for access"
    assert unauthenticated.headers["Access-Control-Allow-Origin"] == VIEWER_ORIGIN


async def test_no_cross_origin_access_unless_configured(archive_world):
    preflight = await archive_world.client.options("/dicomweb/studies", headers={
        "Origin": VIEWER_ORIGIN, "Access-Control-Request-Method": "GET"})
    assert preflight.status in (403, 405)
    assert "Access-Control-Allow-Origin" not in preflight.headers
    head = await archive_world.client.head("/dicomweb/studies",
                                           headers=archive_world.auth("clinician"))
    assert head.status == 200, "GET and HEAD /dicomweb/studies, as on every other GET route"


async def test_equally_accepted_lossless_syntaxes_get_each_instance_smallest(archive_world, files):
    """Accepting JPEG-LS, HTJ2K and JPEG XL with the same q: each instance comes in whichever
    codes it in the fewest bytes, naming its syntax in its part, bit-exact; a preference by q
    is followed as before."""
    world = archive_world
    by_name = {p.name: p for p in files}
    chosen = [by_name[n] for n in ("01.dcm", "US1_UNCR.dcm", "MR2_UNCR.dcm")]
    await world.stow(chosen)
    auth = world.auth("clinician")
    syntaxes = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.110"]
    smallest_of = {}

    def accept(q: list[str]) -> str:
        return ", ".join(f'multipart/related; type="application/dicom"; transfer-syntax={s}; q={v}'
                         for s, v in zip(syntaxes, q))

    for path in chosen:
        url = "/dicomweb/studies/{}/series/{}/instances/{}".format(*uid_of(path))
        sizes = {}
        for syntax in syntaxes:
            (blob,) = await parts(await world.client.get(url, headers={
                **auth, "Accept": f'multipart/related; type="application/dicom"; '
                                  f"transfer-syntax={syntax}"}))
            sizes[syntax] = len(blob)
        response = await world.client.get(url, headers={**auth, "Accept": accept(["1"] * 3)})
        assert response.status == 200
        reader = MultipartReader.from_response(response)
        part = await reader.next()
        blob = bytes(await part.read(decode=False))
        smallest = min(sizes, key=sizes.get)
        assert part.headers[hdrs.CONTENT_TYPE].endswith(f"transfer-syntax={smallest}"), path.name
        assert len(blob) == sizes[smallest]
        ds = pydicom.dcmread(io.BytesIO(blob))
        assert ds.file_meta.TransferSyntaxUID == smallest
        _fmt, (pixels,) = decode_frames(ds)
        assert np.array_equal(pixels, pydicom.dcmread(path).pixel_array), path.name
        preferred = await world.client.get(url, headers={**auth,
                                                         "Accept": accept(["1", "0.9", "0.9"])})
        assert f"transfer-syntax={syntaxes[0]}" in preferred.headers[hdrs.CONTENT_TYPE]
        smallest_of[path.name] = smallest
    study = await world.client.get("/dicomweb/studies/" + uid_of(chosen[1])[0], headers={
        **auth, "Accept": accept(["1"] * 3)})
    assert study.headers[hdrs.CONTENT_TYPE].split("transfer-syntax=")[1].startswith(
        smallest_of["US1_UNCR.dcm"] + ";"), "one instance: the whole names its syntax"
