-- Alerts raised by the live analysis of an ECG stream, kept with the recording.
CREATE TABLE ecg_alerts (
    stream_id   TEXT NOT NULL REFERENCES ecg_streams(id),
    kind        TEXT NOT NULL,
    sample      INTEGER NOT NULL,
    leads       TEXT NOT NULL,
    raised_at   TEXT NOT NULL,
    PRIMARY KEY (stream_id, kind, sample)
);
