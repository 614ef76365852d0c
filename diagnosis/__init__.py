"""Diagnosis workers: DICOM imaging and ECG analysis."""
