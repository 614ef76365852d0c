"""telemed: the application that wires consults, signaling and diagnosis workers."""

__version__ = "0.1.0"
