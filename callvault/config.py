"""The one place callvault reads its configuration: a frozen, typed `Settings`.

Values come, highest priority first, from keyword arguments, `CALLVAULT_*` environment
variables, an optional TOML file (`CALLVAULT_CONFIG` or `--config`), then the defaults
below. A bad value fails loudly at start with the setting's name; secret settings are
wrapped so they never print. No other module reads `os.environ`.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from storage.scorecards import DEFAULT_QUESTIONS, Question


class QaQuestion(BaseModel, frozen=True):
    """One QA scorecard question (settings form of `storage.scorecards.Question`)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    text: str = Field(min_length=1, max_length=300)
    points: int = Field(5, ge=1, le=100)


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("callvault_config_file", default=None)
_LABEL = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
_ENDPOINT = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_DIAL_TARGET = re.compile(r"^(sips?:[A-Za-z0-9._~+-]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?"
                          r"|client:[A-Za-z0-9_.-]{1,120}|\+[1-9][0-9]{1,14})$")
_RESERVED_ENDPOINTS = {"callers", "callers-identify", "transport-udp", "global", "system",
                       "callback-trunk"}


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "callvault"


def _default_asterisk_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "callvault" / "asterisk"


class ConfigError(Exception):
    """A setting has a bad value; the message names the setting, never a secret."""

    exit_code = 12


class Settings(BaseSettings):
    """Everything callvault can be told. Field names are the TOML keys; the environment
    variable of each is `CALLVAULT_` + its name in capitals."""

    model_config = SettingsConfigDict(env_prefix="CALLVAULT_", frozen=True, extra="forbid",
                                      hide_input_in_errors=True)

    state_dir: Path = Field(default_factory=_default_state_dir,
                            description="everything callvault writes goes under this folder")
    whisper_model: str = Field(
        "base", description="base (PyPI halves, joined once), tiny.en, or a CTranslate2 dir")
    whisper_device: Literal["cpu", "cuda", "auto"] = "cpu"
    whisper_compute_type: str = Field("int8", pattern=r"^[a-z0-9_]+$")
    whisper_threads: Annotated[int, Field(ge=0, le=256)] = 0
    whisper_beam_size: Annotated[int, Field(ge=1, le=10)] = 5
    redact_mode: Literal["silence", "tone"] = "silence"
    redact_tone_hz: Annotated[float, Field(ge=200, le=3400)] = 1000.0
    redact_pad_before: Annotated[float, Field(ge=0, le=2)] = 0.3
    redact_pad_after: Annotated[float, Field(ge=0, le=2)] = 0.4
    redact_snap_before_seconds: Annotated[float, Field(ge=0, le=3)] = 0.3
    redact_snap_after_seconds: Annotated[float, Field(ge=0, le=3)] = 0.6
    redact_snap_bridge_seconds: Annotated[float, Field(ge=0, le=1)] = 0.3
    verify_scope: Literal["windows", "file"] = "windows"
    verify_context_seconds: Annotated[float, Field(ge=0.5, le=60)] = 3.0
    verify_rounds: Annotated[int, Field(ge=0, le=5)] = 2
    max_duration_seconds: Annotated[float, Field(gt=0, le=48 * 3600)] = 4 * 3600.0
    block_seconds: Annotated[float, Field(ge=30, le=1800)] = 300.0
    custom_terms: dict[str, list[str]] = Field(
        default_factory=dict,
        description="extra labels: {LABEL = [phrases]}, each phrase redacted wherever said")


    # --- the vault (PostgreSQL, S3, keys, jobs) ---
    database_url: SecretStr | None = Field(
        None, description="PostgreSQL DSN; unset starts the embedded server in the state dir")
    s3_endpoint_url: str | None = Field(
        None, description="any S3 endpoint; unset starts the embedded SeaweedFS on loopback")
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{2,32}$")
    s3_bucket: str = Field("callvault", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_object_lock: bool = Field(
        True, description="create the bucket with object lock where the backend supports it")
    seaweedfs_s3_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8333, description="loopback S3 port of the embedded SeaweedFS (0 picks a free one)")
    key_provider: Literal["local", "kms"] = "local"
    keyring_file: Path | None = Field(
        None, description="local keyring (0600); default keys/keyring.json in the state dir")
    kms_raw_key_id: str | None = Field(None, description="KMS key for raw audio")
    kms_redacted_key_id: str | None = Field(
        None, description="KMS key for redacted audio and transcripts")
    kms_endpoint_url: str | None = None
    kms_region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{2,32}$")
    retention_days: Annotated[int, Field(ge=0, le=36500)] = Field(
        0, description="days a stored recording may not be purged (object lock where supported)")
    audit_head_interval_seconds: Annotated[float, Field(ge=1, le=86400)] = 300.0
    worker_concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    job_max_attempts: Annotated[int, Field(ge=1, le=100)] = 20
    job_retry_base_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    job_stalled_seconds: Annotated[float, Field(ge=5, le=86400)] = Field(
        30.0, description="a job whose worker sent no heartbeat for this long is run again")

    # --- Asterisk (ARI) and the sandbox ---
    asterisk_cache_dir: Path = Field(
        default_factory=_default_asterisk_cache,
        description="where the Debian-unstable chroot with Asterisk is built once and shared "
                    "by every state dir (default $XDG_CACHE_HOME/callvault/asterisk)")
    ari_url: str = Field(
        "http://127.0.0.1:8088", pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$",
        description="Asterisk's HTTP server (ARI lives under /ari); the sandbox binds to it")
    ari_user: str = Field("callvault", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ari_password: SecretStr | None = Field(
        None, description="ARI password; unset: generated once into "
                          "asterisk/ari-password (0600) in the state dir")
    ari_app: str = Field("callvault", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                         description="the Stasis application inbound calls are sent to")
    sip_port: Annotated[int, Field(ge=1024, le=65000)] = Field(
        5060, description="loopback UDP port of the sandbox's PJSIP transport")
    agent_endpoints: list[str] = Field(
        default_factory=lambda: ["agent1", "agent2"],
        description="PJSIP endpoints of the agents; in the sandbox agent i (from 0) is "
                    "dialled at 127.0.0.1:sip_port+10+i")
    agent_desks: dict[str, str] = Field(
        default_factory=dict,
        description="agent endpoint → the callvault user (role agent) who sits at it: the "
                    "screen-pop of a call answered at the endpoint goes to that user only")
    agent_ring_seconds: Annotated[float, Field(ge=1, le=120)] = Field(
        20.0, description="how long an agent's phone rings before the next agent is tried")
    agent_session_seconds: Annotated[float, Field(ge=60, le=7 * 86400)] = Field(
        12 * 3600.0, description="lifetime of an agent desk sign-in token")
    callback_trunk: str = Field(
        "callback-trunk", pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="PJSIP endpoint call-backs are dialled through (PJSIP/NUMBER@trunk); in "
                    "the sandbox it points at 127.0.0.1:sip_port+5")
    record_agent_calls: bool = Field(
        True, description="record the agent conversation (never the IVR) into the vault")

    http_host: str = Field("127.0.0.1", description="address `serve` listens on for HTTP")
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    telephony: Literal["none", "asterisk", "twilio"] = Field(
        "none", description="which phone platform `serve` answers calls from")

    # --- Twilio (webhooks and the REST API) ---
    twilio_account_sid: str | None = Field(
        None, pattern=r"^AC[0-9a-fA-F]{32}$", description="the Twilio account (AC...)")
    twilio_auth_token: SecretStr | None = Field(
        None, description="signs Twilio's webhooks and authenticates our REST calls (secret)")
    public_url: str | None = Field(
        None, pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$",
        description="the URL Twilio reaches `serve` at (signatures are computed over it; "
                    "set it when behind a proxy or load balancer)")
    twilio_api_base_url: str = Field(
        "https://api.twilio.com", pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$",
        description="Twilio's REST API (changed only by tests, to a loopback fake)")
    twilio_agents: dict[str, str] = Field(
        default_factory=dict,
        description="agent name (as in agent_desks) → where Twilio dials them: a sip: URI, "
                    "client:IDENTITY or an E.164 number; all ring at once, the first to "
                    "answer takes the call")
    twilio_caller_id: str | None = Field(
        None, pattern=r"^\+[1-9][0-9]{1,14}$",
        description="our Twilio number call-backs are placed from")
    twilio_recording_private_key: Path | None = Field(
        None, description="PEM private key for Twilio's voice-recording encryption (the "
                          "account's public key encrypts; unset: recordings arrive plain)")

    qa_questions: list[QaQuestion] = Field(
        default_factory=lambda: [QaQuestion(id=q.id, text=q.text, points=q.points)
                                 for q in DEFAULT_QUESTIONS],
        min_length=1, max_length=50,
        description="the QA scorecard: [{id, text, points}], each question scored 0..points")
    web_secure_cookies: bool = Field(
        True, description="QA app cookies are Secure and __Host- prefixed (serve behind "
                          "HTTPS; browsers accept them on http://localhost only)")
    web_session_idle_seconds: Annotated[float, Field(ge=60, le=86400)] = Field(
        1800.0, description="a QA app browser session ends after this long without a request")
    web_session_max_seconds: Annotated[float, Field(ge=300, le=7 * 86400)] = Field(
        8 * 3600.0, description="and at the latest this long after sign-in")
    api_token_seconds: Annotated[float, Field(ge=60, le=90 * 86400)] = Field(
        7 * 86400.0, description="lifetime of a QA API bearer token")
    raw_grant_seconds: Annotated[float, Field(ge=60, le=86400)] = Field(
        1800.0, description="how long a compliance officer's stated reason lets their "
                            "session play one recording's original")
    sign_in_lock_after: Annotated[int, Field(ge=1, le=100)] = Field(
        5, description="failed QA app sign-ins that lock an account")
    sign_in_lock_seconds: Annotated[float, Field(ge=60, le=86400)] = Field(
        900.0, description="the window they are counted in, and how long the lock lasts")

    trusted_proxies: list[str] = Field(
        default_factory=list, max_length=64,
        description="addresses or networks of reverse proxies whose X-Forwarded-For "
                    "names the client (sign-in throttling and the access log); empty: "
                    "the peer address is the client")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        import ipaddress
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {item!r} is not an address or network"
                                 ) from None
        return value

    @field_validator("qa_questions")
    @classmethod
    def _unique_questions(cls, value: list[QaQuestion]) -> list[QaQuestion]:
        ids = [q.id for q in value]
        if len(set(ids)) != len(ids):
            raise ValueError("qa_questions ids must be unique")
        return value

    def scorecard_questions(self) -> list[Question]:
        return [Question(q.id, q.text, q.points) for q in self.qa_questions]

    @property
    def keyring_path(self) -> Path:
        return self.keyring_file or self.state_dir / "keys" / "keyring.json"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @property
    def asterisk_root(self) -> Path:
        """The sandbox's chroot (complete once it exists: it is renamed into place)."""
        return self.asterisk_cache_dir / "root"

    @property
    def asterisk_state_dir(self) -> Path:
        """This state dir's Asterisk files: pid file, log, generated ARI password."""
        return self.state_dir / "asterisk"

    @field_validator("agent_endpoints")
    @classmethod
    def _endpoints_are_names(cls, value: list[str]) -> list[str]:
        if len(value) > 64:
            raise ValueError("at most 64 agent endpoints")
        for name in value:
            if not _ENDPOINT.match(name):
                raise ValueError("endpoint names are 1-32 lower-case letters, digits, _ or -, "
                                 "starting with a letter")
            if name in _RESERVED_ENDPOINTS:
                raise ValueError(f"{name}: reserved by the sandbox configuration")
        if len(set(value)) != len(value):
            raise ValueError("agent endpoints must be unique")
        return value

    @field_validator("twilio_agents")
    @classmethod
    def _twilio_agents(cls, value: dict[str, str]) -> dict[str, str]:
        for name, target in value.items():
            if not _ENDPOINT.match(name):
                raise ValueError(f"{name[:40]!r}: agent names are endpoint names")
            if not _DIAL_TARGET.match(target):
                raise ValueError(f"{name}: dial a sip: URI, client:IDENTITY or +E.164 number")
        return value

    @field_validator("agent_desks")
    @classmethod
    def _desks_are_endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        for endpoint, user in value.items():
            if not _ENDPOINT.match(endpoint):
                raise ValueError(f"{endpoint[:40]!r}: not an endpoint name")
            if not user or len(user) > 64:
                raise ValueError("agent desk users are 1-64 characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _dsn_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from psycopg.conninfo import conninfo_to_dict
            try:
                conninfo_to_dict(value.get_secret_value())
            except Exception:  # the driver's message quotes the value: never show it
                raise ValueError("not a PostgreSQL connection string (value not shown)") \
                    from None
        return value

    @field_validator("custom_terms")
    @classmethod
    def _labels_are_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for label, phrases in value.items():
            if not _LABEL.match(label):
                raise ValueError("labels are 2-32 capitals, digits or _ (e.g. PLAN_NAME)")
            if any(not p.strip() for p in phrases):
                raise ValueError(f"{label}: empty phrase")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Build the settings, or raise `ConfigError` naming every bad setting."""
    path = config_file or (Path(p) if (p := os.environ.get("CALLVAULT_CONFIG")) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"configuration file {path.name} not found")
    token = _CONFIG_FILE.set(path)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors())
        raise ConfigError(f"bad configuration: {problems}") from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"bad configuration file {path.name if path else ''}: "
                          f"{str(exc).splitlines()[0]}") from None
    finally:
        _CONFIG_FILE.reset(token)
