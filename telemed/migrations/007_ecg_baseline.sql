-- Each lead's baseline (the sample value of 0 mV) beside its gain; NULL: 0 for every lead
-- (streams received before frames carried baselines).
ALTER TABLE ecg_streams ADD COLUMN baseline TEXT;
