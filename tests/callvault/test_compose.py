"""docker-compose.yml: no Docker engine runs here, so these tests hold the file to what the
code expects: its services, real `CALLVAULT_*` settings (from `Settings.model_fields`, so
a renamed setting fails here), the production values of every setting whose default
means "embedded" or "sandbox", secrets only from `${VAR:?}`, and an Asterisk that runs
the configuration `callvault asterisk render` writes (run here, with the compose file's
own arguments)."""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from callvault.cli import app
from callvault.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose" / "callvault.env.example"
ASTERISK_ENTRYPOINT = ROOT / "deploy" / "compose" / "asterisk" / "entrypoint.sh"

SERVICES = {"postgres", "seaweedfs-master", "seaweedfs-volume", "seaweedfs-filer",
            "seaweedfs-s3", "asterisk-config", "asterisk", "callvault", "worker"}
ONE_SHOT = {"asterisk-config"}
SETTING_VARS = {f"CALLVAULT_{name.upper()}" for name in Settings.model_fields}
# read by load_settings itself rather than a field
OTHER_CALLVAULT_VARS = {"CALLVAULT_CONFIG"}
# `${NAME:?message}`: compose refuses to start while NAME is unset or empty
REQUIRED_VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*):\?[^}]*\}")
ANY_VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?+][^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN")
# what a deployment's environment holds when the tests fill the compose file in
SAMPLE = {"POSTGRES_PASSWORD": "pgSecret0123456789", "S3_ACCESS_KEY_ID": "s3key0123456789",
          "S3_SECRET_ACCESS_KEY": "s3secret0123456789", "ARI_PASSWORD": "ariSecret0123456789",
          "AGENT_ENDPOINTS": '["desk1", "desk2"]',
          "AGENT_SIP_SECRETS": "desk1=sipSecretOne0123 desk2=sipSecretTwo0123",
          "ASTERISK_CALLERS_FROM": "203.0.113.0/24,198.51.100.7",
          "ASTERISK_TRUNK": "sip.carrier.example:5080",
          "ASTERISK_EXTERNAL_ADDRESS": "192.0.2.10"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment is written as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def _fill(text: str, values: dict[str, str] | None = None) -> str:
    """Interpolate as compose would, from SAMPLE (defaults where the file gives one)."""
    values = SAMPLE if values is None else values

    def one(m: re.Match[str]) -> str:
        name, spec = m.group(1), m.group(0)[len(m.group(1)) + 2:-1]
        if name in values:
            return values[name]
        assert spec.startswith((":-", "-")), f"{name} is required but has no sample value"
        return spec.split("-", 1)[1]
    return ANY_VAR.sub(one, text)


def _settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> Settings:
    """The Settings the service's container would load from its environment."""
    import os
    for name in list(os.environ):
        if name.startswith("CALLVAULT_"):
            monkeypatch.delenv(name)
    for name, value in _env(service).items():
        if name.startswith("CALLVAULT_"):
            monkeypatch.setenv(name, _fill(value))
    monkeypatch.setenv("CALLVAULT_STATE_DIR", str(tmp_path / "state"))
    return load_settings()


def _render_argv(compose: dict[str, Any]) -> tuple[list[str], str]:
    """The `callvault asterisk render` arguments of the asterisk-config service, filled
    in, and what it pipes to the command's stdin."""
    service = _services(compose)["asterisk-config"]
    command = service["command"]
    script = str(command[-1] if isinstance(command, list) else command)
    env = {name: _fill(value) for name, value in _env(service).items()}
    feed, sep, rest = script.replace("$$", "$").partition("|")  # $$: a literal dollar
    assert sep, "the agent secrets reach render on stdin, not on its command line"

    def value(m: re.Match[str]) -> str:
        return env[m.group(1)]
    argv = shlex.split(re.sub(r"\$([A-Z][A-Z0-9_]*)", value, rest))
    assert argv[:3] == ["callvault", "asterisk", "render"]
    stdin = env["AGENT_SIP_SECRETS"] + "\n" if "AGENT_SIP_SECRETS" in feed else ""
    return argv[1:], stdin


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target path → volume name (or host path) of a service's short-syntax volumes."""
    out = {}
    for spec in service.get("volumes") or []:
        source, target, *_ = str(spec).split(":")
        out[target] = source
    return out


def test_every_expected_service_is_there(compose: dict[str, Any]) -> None:
    """The file parses and names serve, workers, PostgreSQL, SeaweedFS and Asterisk."""
    assert set(_services(compose)) == SERVICES


def test_every_callvault_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    """Each CALLVAULT_* name in the file is a Settings field (or CALLVAULT_CONFIG)."""
    named = set(re.findall(r"\bCALLVAULT_[A-Z0-9_]+", COMPOSE.read_text()))
    assert named, "the file sets no CALLVAULT_* variable at all"
    unknown = named - SETTING_VARS - OTHER_CALLVAULT_VARS
    assert not unknown, f"not callvault settings: {sorted(unknown)}"


@pytest.mark.parametrize("name", ["callvault", "worker"])
def test_the_production_path_is_configured_for_serve_and_workers(
        compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Settings whose defaults mean embedded PostgreSQL/SeaweedFS or the loopback sandbox
    are all set, load without error, and point at the compose services."""
    service = _services(compose)[name]
    settings = _settings_of(service, monkeypatch, tmp_path)
    assert settings.database_url is not None
    dsn = urlsplit(settings.database_url.get_secret_value())
    assert dsn.hostname == "postgres" and dsn.password == SAMPLE["POSTGRES_PASSWORD"]
    assert settings.s3_endpoint_url is not None
    assert urlsplit(settings.s3_endpoint_url).hostname == "seaweedfs-s3"
    assert settings.s3_access_key_id is not None and settings.s3_secret_access_key is not None
    assert urlsplit(settings.ari_url).hostname == "asterisk"
    assert settings.ari_password is not None
    assert settings.telephony == "asterisk"
    assert settings.agent_endpoints == ["desk1", "desk2"]
    # keys: the local keyring on its own volume, shared by serve and every worker
    assert settings.key_provider == "local"
    assert settings.keyring_file is not None
    assert str(settings.keyring_file.parent) in _mounts(service)
    assert _mounts(service)[str(settings.keyring_file.parent)] == "callvault-keys"


def test_serve_listens_beyond_loopback_on_the_published_port(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """serve's HTTP binds every address, on the port the service publishes and checks."""
    service = _services(compose)["callvault"]
    settings = _settings_of(service, monkeypatch, tmp_path)
    assert ipaddress.ip_address(settings.http_host).is_unspecified
    assert any(str(p).endswith(f":{settings.http_port}") for p in service["ports"])
    assert f":{settings.http_port}/healthz" in " ".join(service["healthcheck"]["test"])
    assert _mounts(service)[_env(service)["CALLVAULT_STATE_DIR"]] == "callvault-state"


def test_secrets_come_only_from_required_environment_variables(
        compose: dict[str, Any]) -> None:
    """Every secret setting, and every secret-looking variable of any service, is a
    `${VAR:?}` with no default; the DSN's password is one too."""
    secret_fields = {f"CALLVAULT_{n.upper()}" for n, f in Settings.model_fields.items()
                     if "SecretStr" in str(f.annotation)}
    assert "CALLVAULT_ARI_PASSWORD" in secret_fields
    for name, service in _services(compose).items():
        for var, value in _env(service).items():
            if var == "CALLVAULT_DATABASE_URL":
                placeholder = urlsplit(_fill(value, dict.fromkeys(SAMPLE, "X"))).password
                assert placeholder == "X", f"{name}: the DSN's password is not from the env"
                assert REQUIRED_VAR.search(value) and ":-" not in value
            elif var in secret_fields or SECRET_NAME.search(var):
                assert REQUIRED_VAR.fullmatch(value), f"{name}: {var} is not ${{VAR:?...}}"


def test_the_env_example_holds_placeholders_for_every_required_variable() -> None:
    """The example sets every variable the file requires, and only to <placeholders>."""
    required = set(REQUIRED_VAR.findall(COMPOSE.read_text()))
    given: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), line
        assert re.fullmatch(r"[ =:]*", re.sub(r"<[^<>]*>", "", value)), \
            f"{name}: the example holds something other than placeholders"
        assert "<" in value, f"{name}: empty"
        given[name] = value
    assert required <= set(given), f"missing from the example: {sorted(required - set(given))}"


def test_services_restart_check_their_health_and_wait_for_what_they_need(
        compose: dict[str, Any]) -> None:
    """No host network; long-running services restart; depends_on always has a condition;
    everything a service waits on healthy has a healthcheck."""
    services = _services(compose)
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        if name not in ONE_SHOT:
            assert service.get("restart") in ("unless-stopped", "always"), name
        for other, how in (service.get("depends_on") or {}).items():
            assert other in services, f"{name} depends on unknown {other}"
            condition = how["condition"]
            assert condition in ("service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in services[other], other
            else:
                assert other in ONE_SHOT
    assert int(_fill(str(services["worker"]["deploy"]["replicas"]))) >= 1
    assert services["worker"]["command"] == ["worker"]
    assert services["callvault"]["command"] == ["serve"]


def test_asterisk_runs_the_configuration_render_writes(compose: dict[str, Any]) -> None:
    """asterisk-config renders into a volume that asterisk mounts where its entry point
    installs from; RTP and SIP are published as rendered; ARI is not published."""
    services = _services(compose)
    argv, _ = _render_argv(compose)
    out = _option(argv, "--out")
    volume = _mounts(services["asterisk-config"])[out]
    source = re.search(r"^src=(\S+)$", ASTERISK_ENTRYPOINT.read_text(), re.M)
    assert source is not None
    assert _mounts(services["asterisk"]).get(source.group(1)) == volume
    assert services["asterisk"]["depends_on"]["asterisk-config"]["condition"] == \
        "service_completed_successfully"
    ports = [str(p) for p in services["asterisk"]["ports"]]
    start, end = _option(argv, "--rtp-ports").split("-")
    assert f"{start}-{end}:{start}-{end}/udp" in ports
    assert "5060:5060/udp" in ports
    ari_port = str(urlsplit(_env(services["callvault"])["CALLVAULT_ARI_URL"]).port)
    assert not any(p.split("/")[0].split(":")[-1] == ari_port for p in ports)
    assert ipaddress.ip_address(_option(argv, "--bind")).is_unspecified


def test_render_with_the_compose_arguments_writes_a_production_asterisk(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The compose file's own `asterisk render` line writes every file, 0600, bound to
    the given address, with the ARI user, the agents' auth, the trunk and the callers'
    networks, and nothing bound to loopback."""
    service = _services(compose)["asterisk-config"]
    settings = _settings_of(service, monkeypatch, tmp_path)
    argv, stdin = _render_argv(compose)
    out = tmp_path / "rendered"
    argv[argv.index("--out") + 1] = str(out)
    result = CliRunner().invoke(app, argv, input=stdin)
    assert result.exit_code == 0, result.output
    assert SAMPLE["ARI_PASSWORD"] not in result.output
    files = {p.name: p.read_text() for p in out.iterdir()}
    assert {"asterisk.conf", "http.conf", "ari.conf", "pjsip.conf", "rtp.conf",
            "extensions.conf", "modules.conf"} <= set(files)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in out.iterdir())
    assert "bindaddr = 0.0.0.0" in files["http.conf"]
    assert f"bindport = {urlsplit(settings.ari_url).port}" in files["http.conf"]
    assert f"[{settings.ari_user}]" in files["ari.conf"]
    assert f"password = {SAMPLE['ARI_PASSWORD']}" in files["ari.conf"]
    pjsip = files["pjsip.conf"]
    assert f"bind = 0.0.0.0:{settings.sip_port}" in pjsip
    assert "external_media_address = 192.0.2.10" in pjsip
    assert "match = 203.0.113.0/24, 198.51.100.7/32" in pjsip
    assert "contact = sip:callback@sip.carrier.example:5080" in pjsip
    assert "password = sipSecretOne0123" in pjsip and "username = desk2" in pjsip
    assert "rtpstart = 10000" in files["rtp.conf"] and "rtpend = 10999" in files["rtp.conf"]
    assert "astetcdir => /srv/callvault/etc" in files["asterisk.conf"]
    settings_lines = [line for text in files.values() for line in text.splitlines()
                      if not line.lstrip().startswith(";")]
    assert not [line for line in settings_lines if "127.0.0.1" in line or "localhost" in line]


def test_render_refuses_a_loopback_bind_and_agents_without_passwords(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A production render bound to loopback, or missing an agent's password, fails
    without writing anything or showing a secret."""
    import os
    for name in list(os.environ):
        if name.startswith("CALLVAULT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CALLVAULT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CALLVAULT_ARI_PASSWORD", "ariSecret0123456789")
    monkeypatch.setenv("CALLVAULT_AGENT_ENDPOINTS", '["desk1", "desk2"]')
    base = ["asterisk", "render", "--out", str(tmp_path / "out"), "--callers-from",
            "203.0.113.0/24", "--trunk", "sip.carrier.example", "--agent-secrets", "-"]
    secrets = "desk1=sipSecretOne0123 desk2=sipSecretTwo0123\n"
    loopback = CliRunner().invoke(app, [*base, "--bind", "127.0.0.1"], input=secrets)
    assert loopback.exit_code != 0 and "loopback" in loopback.output
    missing = CliRunner().invoke(app, base, input="desk1=sipSecretOne0123\n")
    assert missing.exit_code != 0 and "desk2" in missing.output
    assert "sipSecretOne0123" not in missing.output
    assert not (tmp_path / "out").exists()
    assert isinstance(load_settings().ari_password, SecretStr)


def test_render_can_keep_ari_off_the_public_sip_address(tmp_path: Path) -> None:
    """--ari-bind puts ARI/HTTP on a private address while SIP listens on --bind."""
    from typer.testing import CliRunner

    from callvault.cli import app

    secrets_file = tmp_path / "agents"
    secrets_file.write_text("agent1=a-long-agent-password-1\nagent2=a-long-agent-password-2\n")
    env = {"CALLVAULT_STATE_DIR": str(tmp_path / "state"),
           "CALLVAULT_ARI_PASSWORD": "an-ari-password-for-the-test",
           "CALLVAULT_ARI_URL": "http://10.0.0.5:8088"}
    result = CliRunner().invoke(app, [
        "asterisk", "render", "--out", str(tmp_path / "out"), "--bind", "203.0.113.7",
        "--ari-bind", "10.0.0.5", "--callers-from", "198.51.100.0/24",
        "--trunk", "sip.carrier.example:5060", "--agent-secrets", str(secrets_file)], env=env)
    assert result.exit_code == 0, result.output
    http = (tmp_path / "out" / "http.conf").read_text()
    pjsip = (tmp_path / "out" / "pjsip.conf").read_text()
    assert "bindaddr = 10.0.0.5" in http and "203.0.113.7" not in http
    assert "bind = 203.0.113.7:" in pjsip
    bad = CliRunner().invoke(app, [
        "asterisk", "render", "--out", str(tmp_path / "bad"), "--ari-bind", "not-an-ip",
        "--callers-from", "198.51.100.0/24", "--trunk", "sip.carrier.example",
        "--agent-secrets", str(secrets_file)], env=env)
    assert bad.exit_code != 0 and "ari bind" in bad.output
