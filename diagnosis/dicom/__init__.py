"""DICOM ingest, codecs and progressive delivery."""
