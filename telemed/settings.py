"""Settings: defaults, then an optional TOML file, then TELEMED_* variables, then flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "TELEMED_"


class SettingsError(ValueError):
    """A setting has an unknown name or a value of the wrong type."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("var")
    redis_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    max_upload_bytes: int = 2 * 1024**3
    token_ttl_seconds: int = 8 * 3600
    join_link_ttl_seconds: int = 3600
    secret_key: str | None = None
    log_level: str = "INFO"
    ice_servers: tuple[str, ...] = field(default_factory=tuple)
    turn_secret: str | None = None
    turn_credential_ttl_seconds: int = 6 * 3600
    rtc_addresses: tuple[str, ...] = field(default_factory=tuple)
    """Local addresses the media server offers as ICE candidates (Janus ice_enforce_list)."""
    rtc_max_bitrate: int = 2_500_000
    dicom_port: int = 0
    dicom_ae_title: str = "TELEMED"
    dicom_account: str | None = None
    dicom_viewer_origins: tuple[str, ...] = field(default_factory=tuple)
    """Web origins of DICOMweb viewers served elsewhere (e.g. OHIF) allowed to call /dicomweb."""
    dicom_prepare: tuple[str, ...] = ("htj2k",)
    """Progressive codecs made for each image as it is stored (empty: at first viewing)."""

    @property
    def database_path(self) -> Path:
        return self.data_dir / "telemed.sqlite3"

    @property
    def secret_key_path(self) -> Path:
        return self.data_dir / "secret.key"

    @property
    def media_addresses(self) -> tuple[str, ...]:
        """`rtc_addresses`, else the listening address when it names one interface (so the
        embedded default on 127.0.0.1 keeps media on loopback too), else every interface."""
        if self.rtc_addresses:
            return self.rtc_addresses
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            return ()
        return () if address.is_unspecified else (self.host,)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML/env/flag value into the field's type, or say which setting is wrong."""
    if name not in _FIELDS:
        raise SettingsError(f"unknown setting {name!r}")
    kind = _FIELDS[name].type
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind == "Path":
            return Path(value)
        if kind == "tuple[str, ...]":
            if isinstance(value, str):
                return tuple(part.strip() for part in value.split(",") if part.strip())
            return tuple(str(v) for v in value)
        if kind == "str | None":
            return None if value in (None, "") else str(value)
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"setting {name!r} has an invalid value {value!r}") from None


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for key, raw in environ.items():
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            name = key[len(ENV_PREFIX):].lower()
            if name in _FIELDS:
                values[name] = raw
    return values


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    return dict(document.get("telemed", document))


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the layers; a flag given as None means 'not given' and falls through."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(_from_toml(config_file))
    merged.update(_from_env(environ))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    return Settings(**{name: _coerce(name, value) for name, value in merged.items()})
