CREATE TABLE ecg_streams (
    id          TEXT PRIMARY KEY,
    patient_id  TEXT NOT NULL REFERENCES patients(id),
    consult_id  TEXT REFERENCES consults(id),
    created_by  TEXT NOT NULL REFERENCES staff(id),
    fs          REAL,
    leads       TEXT,
    gain        TEXT,
    next_seq    INTEGER NOT NULL DEFAULT 0,
    samples     INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'complete')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX ecg_streams_patient ON ecg_streams(patient_id);
