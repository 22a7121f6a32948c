"""The `[plain-ivr]` dialplan, bench/ivr_load.py's baseline, is a real flow: a SIPp caller
with the right PIN reaches a SIPp agent, one with a wrong PIN does not."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from telephony.ari.sandbox import AGENT_PORT_OFFSET, AsteriskSandbox
from tests.telephony.sandbox_fixture import free_port

SIPP_DIR = Path(__file__).resolve().parents[2] / "deploy" / "sipp"
SERVICE = "99918005550100"    # 999 + number: [from-callers] sends it to [plain-ivr]
RIGHT = "+15557770001"        # presses 235789 (load_caller.xml)
WRONG = "+15557770002"        # presses 134679 (uac_pin_134679.xml)
TALK_MS = 1000


def _cli(box: AsteriskSandbox, command: str) -> str:
    """One Asterisk CLI command in the sandbox's chroot (ARI refuses DB() writes)."""
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    return subprocess.run(
        [chroot, str(box.root), "/usr/sbin/asterisk", "-C",
         f"{box.instance}/etc/asterisk.conf", "-rx", command],
        capture_output=True, text=True, timeout=10, check=True).stdout


@pytest.fixture(scope="module")
def plain(sandbox: AsteriskSandbox) -> AsteriskSandbox:
    """Both callers' accounts and PIN 235789 in AstDB; agent1 is the whole pool."""
    for caller, account in ((RIGHT, "7001"), (WRONG, "7002")):
        assert "Updated" in _cli(sandbox, f"database put cvbench/phone {caller} {account}")
        assert "Updated" in _cli(sandbox, f"database put cvbench/pin {account} 235789")
    for name, value in (("CVB_AGENTS", "agent1"), ("CVB_RING", "5"), ("CVB_NEXT", "0")):
        query = urllib.parse.urlencode({"variable": name, "value": value})
        code, _ = sandbox.ari_request("POST", f"asterisk/variable?{query}")
        assert code == 204
    return sandbox


def _agent(box: AsteriskSandbox, workdir: Path) -> subprocess.Popen[bytes]:
    assert shutil.which("sipp"), "sip-tester is not installed (make installs it)"
    return subprocess.Popen(
        ["sipp", "-sf", str(SIPP_DIR / "load_agent.xml"), "-m", "1", "-d", str(TALK_MS),
         "-p", str(box.settings.sip_port + AGENT_PORT_OFFSET),
         "-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", str(free_port(socket.SOCK_DGRAM)),
         "-nostdin", "-trace_err", "-trace_logs", "-log_file", str(workdir / "agent.log"),
         "-timeout", "30s", "-timeout_error"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _caller(box: AsteriskSandbox, scenario: str, caller: str, workdir: Path) -> tuple[int, str]:
    inf = workdir / "caller.csv"
    inf.write_text(f"SEQUENTIAL\n{caller};\n")
    done = subprocess.run(
        ["sipp", f"127.0.0.1:{box.settings.sip_port}", "-sf", str(SIPP_DIR / scenario),
         "-s", SERVICE, "-inf", str(inf), "-key", "caller", caller, "-m", "1",
         "-i", "127.0.0.1", "-mi", "127.0.0.1",
         "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_port(socket.SOCK_DGRAM)),
         "-nostdin", "-trace_err", "-trace_logs", "-log_file", str(workdir / "caller.log"),
         "-timeout", "60s", "-timeout_error"],
        cwd=workdir, capture_output=True, timeout=90, check=False)
    return done.returncode, done.stderr.decode(errors="replace")


def _marks(log: Path) -> dict[str, float]:
    """what → wall-clock time, from load_caller.xml's log lines."""
    marks = {}
    for line in log.read_text().splitlines():
        _, _, what, sec, usec = line.split()[-5:]
        marks[what] = float(sec) + float(usec) / 1e6
    return marks


def test_right_pin_reaches_the_agent_who_answers_talks_and_hangs_up(
        plain: AsteriskSandbox, tmp_path: Path) -> None:
    """235789 → Dial agent1 → it answers; its BYE after the talk time is the caller's BYE."""
    agent = _agent(plain, tmp_path)
    try:
        rc, err = _caller(plain, "load_caller.xml", RIGHT, tmp_path)
        _, agent_err = agent.communicate(timeout=15)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert rc == 0, err[-2000:]
    assert agent.returncode == 0, agent_err.decode(errors="replace")[-2000:]
    marks = _marks(tmp_path / "caller.log")
    assert set(marks) == {"invite", "pound", "bye"}, marks
    assert TALK_MS / 1000 <= marks["bye"] - marks["pound"] < TALK_MS / 1000 + 2.0
    [answered] = (tmp_path / "agent.log").read_text().splitlines()
    assert answered.startswith("cvagent answered") and f"sip:{RIGHT}@" in answered
    sec, usec = answered.split()[2:4]
    assert marks["pound"] < float(sec) + float(usec) / 1e6 < marks["bye"]
    assert f"/cvbench/result/{RIGHT}" in _cli(plain, "database show cvbench/result")
    assert "ANSWER" in _cli(plain, f"database get cvbench/result {RIGHT}")


def test_wrong_pin_does_not_reach_the_agent(plain: AsteriskSandbox, tmp_path: Path) -> None:
    """134679 → re-prompted, no agent rung; the caller gives up and hangs up after 2.5 s."""
    agent = _agent(plain, tmp_path)
    try:
        rc, err = _caller(plain, "uac_pin_134679.xml", WRONG, tmp_path)
        time.sleep(0.5)
        assert agent.poll() is None   # -m 1: it would have ended after one call
    finally:
        agent.kill()
        agent.communicate()
    assert rc == 0, err[-2000:]
    log = tmp_path / "agent.log"
    assert not log.exists() or "cvagent" not in log.read_text()
    assert f"/cvbench/result/{WRONG}" not in _cli(plain, "database show cvbench/result")
