// What the image viewer asks DICOMweb (README, "HTTP API"): the series a consult can show
// (QIDO-RS) and how to display each instance (WADO-RS metadata), both in DICOM JSON.
const first = (item, tag) => item[tag]?.Value?.[0];
function number(item, tag, fallback) {
  const value = first(item, tag);
  return value === undefined || value === null || value === "" ? fallback : Number(value);
}

async function dicomJson(path, token) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}`, Accept: "application/dicom+json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || body.title || `${response.status} ${response.statusText}`);
  return body;
}

// The series of the studies attached to the consult (uploads made for the consult, whatever
// Patient ID the files carry) and of the patient's other studies (priors), once each.
export async function consultSeries(consult, token) {
  const studies = [...new Set(consult.attachments.filter((a) => a.kind === "study").map((a) => a.ref))];
  const answers = await Promise.all([
    ...studies.map((study) => dicomJson(`/dicomweb/studies/${encodeURIComponent(study)}/series`, token)),
    dicomJson(`/dicomweb/series?PatientID=${encodeURIComponent(consult.patient_id)}`, token),
  ]);
  const series = new Map();
  for (const item of answers.flat()) {
    const uid = first(item, "0020000E");
    series.set(uid, {
      study: first(item, "0020000D"), series: uid, modality: first(item, "00080060") ?? "",
      number: first(item, "00200011") ?? "", description: first(item, "0008103E") ?? "",
      instances: number(item, "00201209", 0),
    });
  }
  return [...series.values()].sort((a, b) => a.study.localeCompare(b.study) || a.number - b.number);
}

// Per SOP instance UID: the modality LUT (rescale) and the stored window, which the frames
// themselves do not carry.
export async function seriesDisplay(study, series, token) {
  const instances = await dicomJson(
    `/dicomweb/studies/${encodeURIComponent(study)}/series/${encodeURIComponent(series)}/metadata`, token);
  return new Map(instances.map((item) => [first(item, "00080018"), {
    slope: number(item, "00281053", 1), intercept: number(item, "00281052", 0),
    center: number(item, "00281050", null), width: number(item, "00281051", null),
    inverted: first(item, "00280004") === "MONOCHROME1",
  }]));
}
