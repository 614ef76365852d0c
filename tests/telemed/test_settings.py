"""Settings come from flags, then TELEMED_* variables, then a TOML file, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from telemed.settings import Settings, SettingsError, load_settings


def test_defaults_are_embedded_and_local():
    settings = load_settings(environ={})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.redis_url) == ("127.0.0.1", 8080, None)
    assert settings.database_path == Path("var/telemed.sqlite3")


def test_precedence_flags_over_env_over_file(tmp_path):
    config = tmp_path / "telemed.toml"
    config.write_text('[telemed]\nport = 9000\nhost = "0.0.0.0"\nmax_body_bytes = 10\n'
                      'ice_servers = ["stun:stun.example.org"]\n')
    env = {"TELEMED_PORT": "9100", "TELEMED_MAX_BODY_BYTES": "20", "UNRELATED": "1"}
    settings = load_settings(flags={"port": 9200, "host": None}, environ=env, config_file=config)
    assert settings.port == 9200
    assert settings.max_body_bytes == 20
    assert settings.host == "0.0.0.0"
    assert settings.ice_servers == ("stun:stun.example.org",)


def test_config_file_named_by_environment(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('redis_url = "redis://127.0.0.1:7000/0"\n')
    settings = load_settings(environ={"TELEMED_CONFIG": str(config)})
    assert settings.redis_url == "redis://127.0.0.1:7000/0"


@pytest.mark.parametrize("content,needle", [
    ("port = 'eighty'", "invalid value"),
    ("colour = 'blue'", "unknown setting"),
    ("port = true", "invalid value"),
    ("port = [", "not valid TOML"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path, content, needle):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(SettingsError, match=needle):
        load_settings(environ={}, config_file=config)


def test_bad_environment_value_and_missing_file():
    with pytest.raises(SettingsError, match="port"):
        load_settings(environ={"TELEMED_PORT": "x"})
    with pytest.raises(SettingsError, match="not found"):
        load_settings(environ={}, config_file=Path("/nonexistent/telemed.toml"))
