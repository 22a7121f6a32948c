"""The Asterisk sandbox: a real Asterisk 22 in the cached chroot, ARI, SIPp, loopback only."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from callvault.config import ConfigError, Settings, load_settings
from telephony.ari.sandbox import (
    AsteriskSandbox,
    SandboxError,
    ari_password,
    debian_mirror,
    render_configs,
)
from tests.telephony.sandbox_fixture import free_port, sandbox_settings

CLI = [sys.executable, "-c", "from callvault.cli import main; main()"]
SCENARIO = Path(__file__).resolve().parents[2] / "deploy" / "sipp" / "uac_answered.xml"


def _sockets(pid: int) -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(protocol, address, port) of every TCP listener and UDP socket the process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            f = line.split()
            if f[9] not in inodes or (proto.startswith("tcp") and f[3] != "0A"):
                continue
            hexaddr, hexport = f[1].split(":")
            raw = b"".join(bytes.fromhex(hexaddr[i:i + 8])[::-1]
                           for i in range(0, len(hexaddr), 8))
            found.append((proto, ipaddress.ip_address(raw), int(hexport, 16)))
    return found


def test_ari_answers_with_the_settings_credentials_and_refuses_a_wrong_password(
        sandbox: AsteriskSandbox) -> None:
    """ARI's /asterisk/info is 200 with the configured user and password, 401 otherwise."""
    code, body = sandbox.ari_request("GET", "asterisk/info")
    assert code == 200, code
    assert "system" in json.loads(body)
    code, _ = sandbox.ari_request("GET", "asterisk/info", password=SecretStr("wrong-pass"))
    assert code == 401


def test_the_asterisk_is_version_22(sandbox: AsteriskSandbox) -> None:
    """status() reports a running Asterisk 22.x with ARI reachable and the pid file's pid."""
    st = sandbox.status()
    assert st.running and st.ari_reachable
    assert st.version is not None and st.version.startswith("22."), st.version
    assert st.pid == int(sandbox.pid_path.read_text())


def test_ari_and_sip_listen_on_loopback_only(sandbox: AsteriskSandbox) -> None:
    """Every TCP listener is on 127.0.0.1 (ARI among them), and SIP is bound to 127.0.0.1."""
    pid = sandbox.pid()
    assert pid is not None
    socks = _sockets(pid)
    port = int(sandbox.settings.ari_url.rsplit(":", 1)[1])
    tcp = [(a, p) for proto, a, p in socks if proto.startswith("tcp")]
    assert tcp == [(ipaddress.ip_address("127.0.0.1"), port)], tcp
    sip = [(a, p) for proto, a, p in socks if p == sandbox.settings.sip_port]
    assert sip == [(ipaddress.ip_address("127.0.0.1"), sandbox.settings.sip_port)], sip
    # Two unconnected client sockets on ephemeral ports (seemingly PJSIP's DNS resolver)
    # are allowed; no other UDP socket may be on a wildcard address.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    wild = [(proto, a, p) for proto, a, p in socks
            if proto.startswith("udp") and not a.is_loopback]
    assert all(p >= low for _, _, p in wild) and len(wild) <= 2, wild


async def _next_event(ws: aiohttp.ClientWebSocketResponse, kind: str,
                      timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event: dict[str, Any] = json.loads(msg.data)
            if event.get("type") == kind:
                return event


async def _call_into_stasis(box: AsteriskSandbox, workdir: Path) -> tuple[dict[str, Any], int,
                                                                          str]:
    s = box.settings
    token = base64.b64encode(
        f"{s.ari_user}:{ari_password(s).get_secret_value()}".encode()).decode()
    ws_url = s.ari_url.replace("http", "ws", 1) + f"/ari/events?app={s.ari_app}"
    headers = {"Authorization": f"Basic {token}"}  # basic auth: no password in the URL
    async with aiohttp.ClientSession(headers=headers) as http, http.ws_connect(ws_url) as ws:
        sipp = await asyncio.create_subprocess_exec(
            "sipp", f"127.0.0.1:{s.sip_port}", "-sf", str(SCENARIO), "-s", "18005550100",
            "-m", "1", "-mi", "127.0.0.1", "-i", "127.0.0.1",
            "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
            "-nostdin", "-trace_err", "-timeout", "30s", "-timeout_error",
            cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            start = await _next_event(ws, "StasisStart", 15)
            channel = start["channel"]["id"]
            async with http.post(f"{s.ari_url}/ari/channels/{channel}/answer") as r:
                assert r.status == 204, r.status
            await asyncio.sleep(0.3)
            async with http.delete(f"{s.ari_url}/ari/channels/{channel}") as r:
                assert r.status == 204, r.status
            await _next_event(ws, "StasisEnd", 10)
        finally:
            if sipp.returncode is None:
                async with asyncio.timeout(30):
                    _, err = await sipp.communicate()
    return start, sipp.returncode or 0, err.decode(errors="replace")


def test_a_sipp_call_reaches_the_stasis_app(sandbox: AsteriskSandbox, tmp_path: Path) -> None:
    """A SIPp caller's INVITE to any number arrives as StasisStart; ARI answers and hangs up."""
    assert shutil.which("sipp"), "sip-tester is not installed (make installs it)"
    start, rc, err = asyncio.run(_call_into_stasis(sandbox, tmp_path))
    assert start["application"] == sandbox.settings.ari_app
    assert start["channel"]["dialplan"]["exten"] == "18005550100"
    assert start["channel"]["name"].startswith("PJSIP/callers-")
    assert rc == 0, err[-2000:]


def test_restart_brings_ari_back_with_a_new_process(sandbox: AsteriskSandbox) -> None:
    """restart() stops Asterisk and starts a new one; ARI answers again afterwards."""
    before = sandbox.pid()
    st = sandbox.restart(timeout=60)
    assert st.running and st.ari_reachable
    assert st.pid is not None and st.pid != before
    assert sandbox.ari_request("GET", "asterisk/info")[0] == 200


def _running(pid: int) -> bool:
    """True unless the process is gone or a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def _cli(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALLVAULT_STATE_DIR": str(settings.state_dir),
           "CALLVAULT_ARI_URL": settings.ari_url, "CALLVAULT_SIP_PORT": str(settings.sip_port)}
    env.pop("CALLVAULT_CONFIG", None)
    return subprocess.run([*CLI, "asterisk", *args], capture_output=True, text=True, env=env,
                          timeout=180, check=False)


def test_cli_up_status_down_leaves_nothing_listening(tmp_path: Path) -> None:
    """`asterisk up` runs it (status 0), `down` stops it (status 3) and frees both ports."""
    settings = sandbox_settings(tmp_path / "state")
    up = _cli(["up"], settings)
    try:
        assert up.returncode == 0, up.stderr
        assert settings.ari_url in up.stdout and "asterisk.log" in up.stdout
        password = ari_password(settings).get_secret_value()
        assert password not in up.stdout + up.stderr
        assert (settings.asterisk_state_dir / "ari-password").stat().st_mode & 0o077 == 0
        status = _cli(["status", "--json"], settings)
        assert status.returncode == 0, status.stdout + status.stderr
        pid = json.loads(status.stdout)["pid"]
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        down = _cli(["down"], settings)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    assert _cli(["status"], settings).returncode == 3
    assert not _running(pid)
    port = int(settings.ari_url.rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", settings.sip_port))  # raises if anything still holds it


def test_mirror_comes_from_apt_sources_skipping_security(tmp_path: Path) -> None:
    """deb822 and one-line apt sources both give the first non-security mirror."""
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "a.sources").write_text("Types: deb\nURIs: http://sec.example/debian-security\n"
                                 "Suites: bookworm-security\n\nTypes: deb\n"
                                 "URIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert debian_mirror((d,)) == "http://mirror.example/debian"
    one = tmp_path / "sources.list"
    one.write_text("# x\ndeb [arch=amd64] http://m2.example/debian bookworm main\n")
    assert debian_mirror((tmp_path / "none", one)) == "http://m2.example/debian"
    with pytest.raises(SandboxError):
        debian_mirror((tmp_path / "none",))


def test_rendered_configuration_binds_loopback_and_dials_agents_on_known_ports(
        tmp_path: Path) -> None:
    """pjsip.conf binds 127.0.0.1:sip_port and agent i's contact is at sip_port+10+i."""
    settings = load_settings(state_dir=tmp_path, sip_port=6000, ari_url="http://127.0.0.1:9088",
                             agent_endpoints=["alex", "sam"],
                             ari_password=SecretStr("s3cret-Pw"))
    conf = render_configs(settings, "/srv/callvault/x")
    assert "bind = 127.0.0.1:6000" in conf["pjsip.conf"]
    assert "contact = sip:alex@127.0.0.1:6010" in conf["pjsip.conf"]
    assert "contact = sip:sam@127.0.0.1:6011" in conf["pjsip.conf"]
    assert "bindaddr = 127.0.0.1" in conf["http.conf"] and "bindport = 9088" in conf["http.conf"]
    assert "Stasis(callvault)" in conf["extensions.conf"]
    assert "${EXTEN:1}" in conf["extensions.conf"]
    assert "astspooldir => /srv/callvault/x/spool" in conf["asterisk.conf"]


def test_a_password_asterisk_cannot_carry_is_refused_without_showing_it(tmp_path: Path) -> None:
    """An ARI password with ';' (a config comment) is refused and not quoted in the error."""
    settings = load_settings(state_dir=tmp_path, ari_password=SecretStr("abc;def-secret"))
    with pytest.raises(SandboxError) as caught:
        render_configs(settings, "/srv/callvault/x")
    assert "def-secret" not in str(caught.value)


def test_generated_ari_password_is_stable_and_private(tmp_path: Path) -> None:
    """Without ari_password one is generated once, kept 0600, and returned again."""
    settings = load_settings(state_dir=tmp_path)
    first = ari_password(settings).get_secret_value()
    assert len(first) >= 24 and first == ari_password(settings).get_secret_value()
    assert (tmp_path / "asterisk" / "ari-password").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("endpoints", [["Agent1"], ["a1", "a1"], ["callers"], ["x y"]])
def test_bad_agent_endpoint_names_are_refused(endpoints: list[str]) -> None:
    """Agent endpoints must be unique lower-case names not taken by the sandbox's config."""
    with pytest.raises(ConfigError, match="agent_endpoints"):
        load_settings(agent_endpoints=endpoints)


def test_non_loopback_ari_url_is_refused_for_the_sandbox(tmp_path: Path) -> None:
    """The sandbox will not bind ARI to anything but a loopback address."""
    settings = load_settings(state_dir=tmp_path, ari_url="http://0.0.0.0:8088")
    with pytest.raises(SandboxError, match="loopback"):
        AsteriskSandbox(settings.asterisk_root, settings)
