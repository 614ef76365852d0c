-- Per-institution policy for lossy image delivery (CAR ratio caps per modality); off unless an
-- administrator turns it on for an institution.
ALTER TABLE institutions ADD COLUMN lossy_imaging INTEGER NOT NULL DEFAULT 0
    CHECK (lossy_imaging IN (0, 1));
