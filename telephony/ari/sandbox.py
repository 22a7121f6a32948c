"""The Asterisk sandbox: a real Asterisk 22 from Debian unstable, in a chroot, on loopback.

Owns building the chroot once (debootstrap, into a cache shared by every state dir),
rendering `deploy/asterisk/` into a per-state-dir instance inside it, and running
`asterisk -f` there as a child process that other callvault processes find through a pid
file. Each state dir gets its own instance (`/srv/callvault/<id>` in the chroot: etc,
spool with `recording/`, run, log, db), so test state dirs share one chroot without
sharing configuration. Secrets: the ARI password only ever goes into the instance's
`ari.conf` (0640, root:asterisk, under a 0700 cache dir) and HTTP Authorization headers.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from callvault.config import Settings

TEMPLATES = Path(__file__).resolve().parents[2] / "deploy" / "asterisk"
_FILES = ("asterisk.conf", "modules.conf", "logger.conf", "http.conf", "ari.conf",
          "rtp.conf", "pjsip.conf", "extensions.conf", "cdr.conf", "cel.conf",
          "indications.conf", "stasis.conf", "features.conf", "udptl.conf", "acl.conf",
          "ccss.conf", "pjproject.conf", "res_fax.conf", "res_http_media_cache.conf",
          "websocket_client.conf")
_APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
AGENT_PORT_OFFSET = 10  # agent i of agent_endpoints is dialled at sip_port + 10 + i
CALLBACK_PORT_OFFSET = 5  # the call-back trunk's far end listens at sip_port + 5


class SandboxError(Exception):
    """The sandbox cannot do what was asked; the message never holds a secret."""

    exit_code = 30


class SandboxUnavailable(SandboxError):
    """The chroot cannot be built or found (not root, no debootstrap, no mirror, failure)."""

    exit_code = 30


class SandboxStartFailed(SandboxError):
    """Asterisk did not come up with ARI answering, or its ports are taken."""

    exit_code = 31


@dataclass(frozen=True)
class SandboxStatus:
    running: bool
    pid: int | None
    version: str | None
    ari_reachable: bool
    ari_url: str
    log: Path


@dataclass(frozen=True)
class Deployment:
    """A production Asterisk rendered from the same templates (`callvault asterisk render`):
    ARI/HTTP and the PJSIP transport on `bind`, callers from the carrier's networks, the
    call-back trunk at the carrier, agents' phones registering with their own passwords."""

    bind: str
    callers_from: tuple[str, ...]
    trunk_host: str
    trunk_port: int = 5060
    agent_passwords: Mapping[str, str] = field(default_factory=dict, repr=False)
    external_address: str | None = None  # advertised in SIP and SDP (NAT, containers)
    rtp_ports: tuple[int, int] = (10000, 20000)
    ari_bind: str | None = None  # where ARI/HTTP listens, if not on `bind` (a private address)


def debian_mirror(sources: tuple[Path, ...] = _APT_SOURCES) -> str:
    """The first non-security Debian mirror of this machine's apt sources."""
    for src in sources:
        files = sorted(src.glob("*.sources")) + sorted(src.glob("*.list")) \
            if src.is_dir() else [src] if src.is_file() else []
        for f in files:
            text = f.read_text(errors="replace")
            if f.suffix == ".sources":
                for stanza in re.split(r"\n\s*\n", text):
                    pairs = re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M)
                    fields: dict[str, str] = dict(pairs)
                    if "deb" in fields.get("Types", "").split() and \
                            "security" not in fields.get("Suites", "") and fields.get("URIs"):
                        return fields["URIs"].split()[0].rstrip("/")
            else:
                for line in text.splitlines():
                    m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
                    if m and "security" not in m.group(2):
                        return m.group(1).rstrip("/")
    raise SandboxUnavailable("no Debian mirror found in the machine's apt sources")


def ari_password(settings: Settings) -> SecretStr:
    """`ari_password`, or the one generated once into the state dir (0600)."""
    if settings.ari_password is not None:
        return settings.ari_password
    path = settings.asterisk_state_dir / "ari-password"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return SecretStr(path.read_text().strip())


def ari_endpoint(settings: Settings) -> tuple[str, int]:
    """The loopback host and port the sandbox's HTTP server binds, from `ari_url`."""
    parts = urlsplit(settings.ari_url)
    try:
        host = ipaddress.ip_address(parts.hostname or "")
        port = parts.port
    except ValueError:
        raise SandboxError("ari_url: the sandbox needs an IP address and port") from None
    if parts.scheme != "http" or not host.is_loopback or port is None:
        raise SandboxError("ari_url: the sandbox serves plain http on a loopback address "
                           "with an explicit port")
    return str(host), port


class AsteriskSandbox:
    """One Asterisk instance of one state dir, in the shared chroot at `root`."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings
        digest = hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:12]
        self.instance = f"/srv/callvault/{digest}"  # inside the chroot
        self.state = settings.asterisk_state_dir
        self.log_path = self.state / "asterisk.log"
        self.pid_path = self.state / "asterisk.pid"
        self._host, self._port = ari_endpoint(settings)

    # --- building -------------------------------------------------------------------
    def ensure_created(self) -> bool:
        """Build the chroot unless it exists; True if built now. A build goes to a
        temporary folder renamed into place at the end, so a half-built one never counts."""
        if self._complete():
            return False
        if self.root.exists():
            raise SandboxUnavailable(f"{self.root} exists but holds no asterisk; remove it")
        if os.geteuid() != 0:
            raise SandboxUnavailable("building the Asterisk chroot needs root (debootstrap)")
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None:
            raise SandboxUnavailable("debootstrap is not installed (apt-get install "
                                     "debootstrap, or run make)")
        cache = self.root.parent
        cache.mkdir(parents=True, exist_ok=True)
        cache.chmod(0o700)  # ari.conf holds the password in plain text
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._complete():
                return False
            for stale in cache.glob("root.partial-*"):
                _remove_tree(stale)
            tmp = Path(tempfile.mkdtemp(prefix="root.partial-", dir=cache))
            log = cache / "debootstrap.log"
            with open(log, "w") as out:
                rc = subprocess.call(
                    [debootstrap, "--variant=minbase", "--include=asterisk,asterisk-modules",
                     "unstable", str(tmp), debian_mirror()],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if rc != 0 or not (tmp / "usr/sbin/asterisk").exists():
                _remove_tree(tmp)
                raise SandboxUnavailable(f"debootstrap failed (exit {rc}); see {log}")
            tmp.chmod(0o755)
            tmp.rename(self.root)
        return True

    def _complete(self) -> bool:
        return (self.root / "usr/sbin/asterisk").exists()

    def configure(self) -> None:
        """Write this instance's configuration and folders into the chroot."""
        if not self._complete():
            raise SandboxUnavailable("the Asterisk chroot does not exist; run "
                                     "`callvault asterisk create`")
        uid, gid = _ids(self.root, "asterisk")
        base = self.root / self.instance.lstrip("/")
        for sub in ("", "etc", "spool", "spool/recording", "run", "log", "db"):
            d = base / sub
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0 if sub in ("", "etc") else uid, gid)
            d.chmod(0o750)
        for name, text in render_configs(self.settings, self.instance).items():
            path = base / "etc" / name
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.chown(tmp, 0, gid)
            tmp.chmod(0o640)
            tmp.replace(path)

    # --- running --------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> SandboxStatus:
        """Run Asterisk and wait until ARI answers; if it already runs, say so."""
        if self.pid() is not None:
            return self.status()
        self._check_ports_free()
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.log_path, "a") as log:
            log.write(f"--- callvault: starting Asterisk {time.strftime('%FT%T%z')} ---\n")
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        argv = [chroot, str(self.root), "/usr/sbin/asterisk", "-f", "-n", "-g",
                "-U", "asterisk", "-G", "asterisk", "-C", f"{self.instance}/etc/asterisk.conf"]
        pid = os.posix_spawn(chroot, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                            "LANG": "C.UTF-8"},
                             file_actions=[
                                 (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                                 (os.POSIX_SPAWN_OPEN, 1, str(self.log_path),
                                  os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                                 (os.POSIX_SPAWN_DUP2, 1, 2)],
                             setsid=True)  # outlives `callvault asterisk up`
        self.pid_path.write_text(f"{pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                self.pid_path.unlink(missing_ok=True)
                raise SandboxStartFailed(f"Asterisk exited while starting; see {self.log_path}")
            if self._ari_info() is not None:
                return self.status()
            time.sleep(0.2)
        self.stop()
        raise SandboxStartFailed(f"ARI did not answer within {timeout:.0f} s; "
                                 f"see {self.log_path}")

    def stop(self, timeout: float = 20.0, *, sig: int = signal.SIGTERM) -> bool:
        """Stop Asterisk (SIGTERM, then SIGKILL; `sig=signal.SIGKILL` kills it outright,
        as a crash would); True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
            time.sleep(0.1)
        self.pid_path.unlink(missing_ok=True)
        # Asterisk's main thread can exit (a zombie) while its HTTP threads still hold the
        # ARI port for a moment; a restart must not race them.
        free_by = time.monotonic() + 10
        while time.monotonic() < free_by:
            try:
                self._check_ports_free()
                break
            except SandboxStartFailed:
                time.sleep(0.1)
        return True

    def restart(self, timeout: float = 60.0) -> SandboxStatus:
        """Stop and start again with the same configuration (a PBX restart)."""
        self.stop()
        return self.start(timeout)

    def pid(self) -> int | None:
        """The pid of this instance's Asterisk if it runs (stale pid files are removed)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if _alive(pid) and f"{self.instance}/etc/".encode() in cmdline:
            return pid
        self.pid_path.unlink(missing_ok=True)
        return None

    def status(self) -> SandboxStatus:
        pid = self.pid()
        info = self._ari_info() if pid is not None else None
        version = info.get("system", {}).get("version") if info else None
        return SandboxStatus(running=pid is not None, pid=pid, version=version,
                             ari_reachable=info is not None, ari_url=self.settings.ari_url,
                             log=self.log_path)

    def ari_request(self, method: str, path: str, password: SecretStr | None = None,
                    timeout: float = 5.0) -> tuple[int, bytes]:
        """One ARI call with basic auth; (status, body), or (0, b"") if nobody answers."""
        secret = (password or ari_password(self.settings)).get_secret_value()
        token = base64.b64encode(f"{self.settings.ari_user}:{secret}".encode()).decode()
        req = urllib.request.Request(f"http://{self._host}:{self._port}/ari/{path.lstrip('/')}",
                                     method=method, headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except (OSError, urllib.error.URLError):
            return 0, b""

    def _ari_info(self) -> dict[str, Any] | None:
        code, body = self.ari_request("GET", "asterisk/info", timeout=2.0)
        if code != 200:
            return None
        info: dict[str, Any] = json.loads(body)
        return info

    def _check_ports_free(self) -> None:
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex((self._host, self._port)) == 0:
                raise SandboxStartFailed(f"something already listens on {self._host}:"
                                         f"{self._port} (ari_url)")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", self.settings.sip_port))
            except OSError:
                raise SandboxStartFailed(f"UDP 127.0.0.1:{self.settings.sip_port} is in use "
                                         "(sip_port)") from None


def render_configs(settings: Settings, instance: str, *,
                   deployment: Deployment | None = None) -> dict[str, str]:
    """The files of `deploy/asterisk/` with this state dir's settings filled in; with a
    `deployment`, for a production Asterisk instead of the loopback sandbox."""
    if deployment is None:
        host, port = ari_endpoint(settings)
    else:
        if settings.ari_password is None:
            raise SandboxError("ari_password must be set for a production Asterisk")
        host, port = deployment.ari_bind or deployment.bind, _ari_port(settings)
        _ip(host, "ari bind")
    secret = ari_password(settings).get_secret_value()
    if not _carriable(secret):
        raise SandboxError("ari_password holds characters an Asterisk config file cannot "
                           "carry (; [ ] newline, outer spaces); value not shown")
    agent = Template((TEMPLATES / "pjsip-agent.conf.in").read_text())
    agents = "\n".join(
        agent.substitute(agent=name, port=settings.sip_port + AGENT_PORT_OFFSET + i)
        for i, name in enumerate(settings.agent_endpoints))
    values = {"instance": instance, "http_host": host, "http_port": port,
              "ari_user": settings.ari_user, "ari_password": secret,
              "ari_app": settings.ari_app, "sip_port": settings.sip_port,
              "agent_sections": agents,
              "callback_port": settings.sip_port + CALLBACK_PORT_OFFSET,
              "sip_bind": "127.0.0.1", "transport_extra": "", "media": _LOOPBACK_MEDIA,
              "callers_from": "127.0.0.1", "callback_host": "127.0.0.1",
              "rtp_start": 10000, "rtp_end": 20000, "bench_routes": _BENCH_ROUTES}
    if deployment is not None:
        values.update(_deployment_values(settings, deployment), bench_routes="")
    return {name: Template((TEMPLATES / name).read_text()).substitute(values)
            for name in _FILES}


# The sandbox only: 999 + number reaches [plain-ivr], bench/ivr_load.py's baseline.
_BENCH_ROUTES = ("exten => _999X!,1,Goto(plain-ivr,${EXTEN:3},1)"
                 "   ; 999 + number: the bench baseline (sandbox only)")
_LOOPBACK_MEDIA = "media_address = 127.0.0.1\nbind_rtp_to_media_address = yes"
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
MIN_AGENT_PASSWORD = 12


def _carriable(secret: str) -> bool:
    """Whether an Asterisk config file can hold `secret` as a value."""
    return bool(secret) and not any(c in secret for c in ";\r\n[]") \
        and secret == secret.strip()


def _ari_port(settings: Settings) -> int:
    parts = urlsplit(settings.ari_url)
    if parts.scheme != "http":
        raise SandboxError("ari_url: Asterisk serves ARI over plain http here; put TLS in "
                           "front of it and keep ari_url on the private network")
    return parts.port or 80


def _ip(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise SandboxError(f"{what}: not an IP address") from None


def _deployment_values(settings: Settings, d: Deployment) -> dict[str, object]:
    """The template values of a production Asterisk; refuses a loopback-only bind."""
    bind = _ip(d.bind, "bind")
    if bind.is_loopback:
        raise SandboxError("bind: a production Asterisk must listen beyond loopback")
    media = ("; RTP on every address; the transport's address goes into SDP"
             if bind.is_unspecified else
             f"media_address = {bind}\nbind_rtp_to_media_address = yes")
    if not d.callers_from:
        raise SandboxError("callers_from: name the networks callers' calls arrive from "
                           "(the carrier or the SBC)")
    try:
        nets = [str(ipaddress.ip_network(n, strict=False)) for n in d.callers_from]
    except ValueError:
        raise SandboxError("callers_from: not an address or network") from None
    trunk = d.trunk_host.strip("[]")
    if not (_HOST.match(trunk) or _is_ip(trunk)) or not 1 <= d.trunk_port <= 65535:
        raise SandboxError("trunk: not a host name or address with a port")
    extra = ""
    if d.external_address is not None:
        if not _HOST.match(d.external_address) and not _is_ip(d.external_address):
            raise SandboxError("external_address: not a host name or address")
        extra = (f"\nexternal_media_address = {d.external_address}"
                 f"\nexternal_signaling_address = {d.external_address}")
    start, end = d.rtp_ports
    if not 1024 <= start < end <= 65535 or start <= settings.sip_port <= end:
        raise SandboxError("rtp_ports: a range above 1023 that leaves out sip_port")
    missing = sorted(set(settings.agent_endpoints) - set(d.agent_passwords))
    unknown = sorted(set(d.agent_passwords) - set(settings.agent_endpoints))
    if missing or unknown:
        raise SandboxError(f"agent passwords: missing for {', '.join(missing) or '-'}; "
                           f"not agent endpoints: {', '.join(unknown) or '-'}")
    if any(len(pw) < MIN_AGENT_PASSWORD or not _carriable(pw)
           for pw in d.agent_passwords.values()):
        raise SandboxError(f"agent passwords are at least {MIN_AGENT_PASSWORD} characters "
                           "without ; [ ] newline or outer spaces; values not shown")
    agent = Template((TEMPLATES / "pjsip-agent-registered.conf.in").read_text())
    agents = "\n".join(agent.substitute(agent=name, password=d.agent_passwords[name],
                                        media=media)
                       for name in settings.agent_endpoints)
    return {"sip_bind": f"[{bind}]" if bind.version == 6 else str(bind),
            "transport_extra": extra, "media": media, "callers_from": ", ".join(nets),
            "callback_host": f"[{trunk}]" if ":" in trunk else trunk,
            "callback_port": d.trunk_port, "rtp_start": start, "rtp_end": end,
            "agent_sections": agents}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it is our child and exited
        if done:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _ids(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise SandboxUnavailable(f"the chroot has no {name} user; rebuild it")


def _remove_tree(path: Path) -> None:
    """Remove a half-built chroot, unmounting anything debootstrap left mounted in it."""
    prefix = str(path.resolve())
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")),
                        reverse=True):
        subprocess.call([shutil.which("umount") or "/usr/bin/umount", "-l", point])
    shutil.rmtree(path, ignore_errors=True)
