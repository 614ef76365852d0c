-- Recordings of a consult's room are attached to the consult like studies and ECGs.
CREATE TABLE consult_attachments_new (
    consult_id  TEXT NOT NULL REFERENCES consults(id),
    kind        TEXT NOT NULL CHECK (kind IN ('study', 'ecg', 'recording')),
    ref         TEXT NOT NULL,
    added_by    TEXT NOT NULL REFERENCES staff(id),
    added_at    TEXT NOT NULL,
    PRIMARY KEY (consult_id, kind, ref)
);
INSERT INTO consult_attachments_new SELECT * FROM consult_attachments;
DROP TABLE consult_attachments;
ALTER TABLE consult_attachments_new RENAME TO consult_attachments;
