CREATE TABLE institutions (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('hospital', 'township', 'village', 'ambulance')),
    status      TEXT NOT NULL DEFAULT 'approved' CHECK (status IN ('approved', 'suspended')),
    parent_id   TEXT REFERENCES institutions(id),
    created_at  TEXT NOT NULL
);

CREATE TABLE staff (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    full_name       TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'expert', 'clinician', 'ambulance')),
    specialty       TEXT,
    institution_id  TEXT NOT NULL REFERENCES institutions(id),
    active          INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL
);

CREATE TABLE patients (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    sex                  TEXT NOT NULL CHECK (sex IN ('F', 'M', 'O', 'U')),
    birth_date           TEXT,
    home_institution_id  TEXT NOT NULL REFERENCES institutions(id),
    created_at           TEXT NOT NULL
);

CREATE TABLE consults (
    id                        TEXT PRIMARY KEY,
    kind                      TEXT NOT NULL CHECK (kind IN ('consult', 'round')),
    patient_id                TEXT NOT NULL REFERENCES patients(id),
    requesting_institution_id TEXT NOT NULL REFERENCES institutions(id),
    requested_by              TEXT NOT NULL REFERENCES staff(id),
    target_institution_id     TEXT NOT NULL REFERENCES institutions(id),
    specialty                 TEXT NOT NULL,
    urgency                   TEXT NOT NULL CHECK (urgency IN ('routine', 'urgent', 'emergency')),
    reason                    TEXT NOT NULL,
    state                     TEXT NOT NULL,
    expert_id                 TEXT REFERENCES staff(id),
    scheduled_at              TEXT,
    report                    TEXT,
    note                      TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL
);
CREATE INDEX consults_patient ON consults(patient_id);
CREATE INDEX consults_target ON consults(target_institution_id, state);

CREATE TABLE consult_participants (
    consult_id  TEXT NOT NULL REFERENCES consults(id),
    staff_id    TEXT NOT NULL REFERENCES staff(id),
    role        TEXT NOT NULL CHECK (role IN ('presenter', 'viewer')),
    PRIMARY KEY (consult_id, staff_id)
);

CREATE TABLE consult_attachments (
    consult_id  TEXT NOT NULL REFERENCES consults(id),
    kind        TEXT NOT NULL CHECK (kind IN ('study', 'ecg')),
    ref         TEXT NOT NULL,
    added_by    TEXT NOT NULL REFERENCES staff(id),
    added_at    TEXT NOT NULL,
    PRIMARY KEY (consult_id, kind, ref)
);

CREATE TABLE referrals (
    id                   TEXT PRIMARY KEY,
    patient_id           TEXT NOT NULL REFERENCES patients(id),
    from_institution_id  TEXT NOT NULL REFERENCES institutions(id),
    to_institution_id    TEXT NOT NULL REFERENCES institutions(id),
    requested_by         TEXT NOT NULL REFERENCES staff(id),
    consult_id           TEXT REFERENCES consults(id),
    urgency              TEXT NOT NULL CHECK (urgency IN ('routine', 'urgent', 'emergency')),
    reason               TEXT NOT NULL,
    state                TEXT NOT NULL,
    assignee_id          TEXT REFERENCES staff(id),
    arranged_for         TEXT,
    summary              TEXT,
    note                 TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX referrals_patient ON referrals(patient_id);

CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY,
    subject     TEXT NOT NULL CHECK (subject IN ('consult', 'referral')),
    subject_id  TEXT NOT NULL,
    action      TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    note        TEXT,
    at          TEXT NOT NULL
);
CREATE INDEX transitions_subject ON transitions(subject, subject_id);

CREATE TABLE join_links (
    code_hash     TEXT PRIMARY KEY,
    consult_id    TEXT NOT NULL REFERENCES consults(id),
    created_by    TEXT NOT NULL REFERENCES staff(id),
    display_name  TEXT NOT NULL,
    expires_at    REAL NOT NULL,
    used_at       REAL
);

CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object      TEXT NOT NULL,
    patient_id  TEXT,
    client      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_patient ON audit(patient_id);
CREATE INDEX audit_actor ON audit(actor);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
