"""Media plane: forwards encoded RTP between peers without decoding it."""
