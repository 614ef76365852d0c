-- Which criteria a STEMI alert met: 'elevation' (ST elevation in two contiguous leads) or
-- 'posterior' (the posterior STEMI equivalent: ST depression with upright T in V1-V3); NULL
-- for other alerts and for alerts raised before it was recorded.
ALTER TABLE ecg_alerts ADD COLUMN criterion TEXT;
