"""Orthanc with its DICOMweb plugin as a benchmark peer (Debian `orthanc`, `orthanc-dicomweb`).

A private configuration in a temporary folder: storage and index there, only the DICOMweb
plugin loaded, the HTTP server on its port with authentication off and remote access allowed
(the viewer sits across the emulated link), the DICOM server off, no modalities, no peers, no
WADO-URI. Orthanc has no bind-address setting, so `bench/dicom.py` starts it inside the link's
server namespace, whose only interfaces are loopback and the emulated link.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
from pathlib import Path

PLUGIN_GLOB = "/usr/lib/orthanc/libOrthancDicomWeb.so*"
ROOT = "/dicom-web"


class OrthancMissing(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed."""


def binary() -> str:
    found = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if found is None:
        raise OrthancMissing("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    return found


def plugin() -> str:
    found = sorted(glob.glob(PLUGIN_GLOB))
    if not found:
        raise OrthancMissing("the Orthanc DICOMweb plugin is not installed "
                             "(apt-get install orthanc-dicomweb)")
    return found[-1]


def versions() -> str:
    """"Orthanc 1.10.1, DICOMweb plugin 1.7" (from the Debian packages when dpkg knows them)."""
    names = {"orthanc": "Orthanc", "orthanc-dicomweb": "DICOMweb plugin"}
    parts = []
    for package, name in names.items():
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], check=False,
                                capture_output=True, text=True)
        parts.append(f"{name} {result.stdout.strip() or '?'}")
    return ", ".join(parts)


def write_config(workdir: Path, http_port: int) -> Path:
    """The configuration file for an Orthanc keeping everything under `workdir`."""
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "telemed-bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "Plugins": [plugin()],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "HttpCompressionEnabled": True,  # Debian's default
        "KeepAlive": True,
        "TcpNoDelay": True,
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "RegisteredUsers": {},
        "DicomServerEnabled": False,
        "DicomModalities": {},
        "OrthancPeers": {},
        "SaveJobs": False,
        "DicomWeb": {"Enable": True, "Root": f"{ROOT}/", "EnableWado": False,
                     "Ssl": False, "Servers": {}},
    }
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def command(config: Path) -> list[str]:
    return [binary(), str(config)]
