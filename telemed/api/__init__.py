"""The HTTP API: JSON in, JSON or RFC 9457 problem details out."""
