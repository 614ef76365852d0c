"""ECG formats and streaming waveform analysis."""
