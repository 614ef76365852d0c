CREATE TABLE dicom_instances (
    sop_instance_uid     TEXT PRIMARY KEY,
    sop_class_uid        TEXT NOT NULL,
    study_uid            TEXT NOT NULL,
    series_uid           TEXT NOT NULL,
    transfer_syntax_uid  TEXT NOT NULL,
    patient_id           TEXT NOT NULL REFERENCES patients(id),
    dicom_patient_id     TEXT NOT NULL,
    patient_name         TEXT NOT NULL,
    modality             TEXT NOT NULL,
    study_date           TEXT NOT NULL,
    study_time           TEXT NOT NULL,
    accession_number     TEXT NOT NULL,
    study_description    TEXT NOT NULL,
    series_description   TEXT NOT NULL,
    series_number        INTEGER,
    instance_number      INTEGER,
    rows                 INTEGER,
    columns              INTEGER,
    frames               INTEGER NOT NULL,
    bits_allocated       INTEGER,
    is_image             INTEGER NOT NULL,
    size                 INTEGER NOT NULL,
    sha256               TEXT NOT NULL,
    path                 TEXT NOT NULL,
    stored_by            TEXT NOT NULL,
    stored_at            TEXT NOT NULL
);
CREATE INDEX dicom_study ON dicom_instances(study_uid);
CREATE INDEX dicom_series ON dicom_instances(series_uid);
CREATE INDEX dicom_patient ON dicom_instances(patient_id);
