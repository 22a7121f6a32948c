"""Pytest fixtures over a real SeaweedFS: one embedded server per test session and a fresh
bucket per test.

Registered for the whole suite by `pytest_plugins` in tests/conftest.py; a module can also
name it in its own `pytest_plugins`. `seaweed` is the running `EmbeddedSeaweed` (loopback,
free ports, in a session temp dir, so parallel sessions never meet); `object_store` is an
`ObjectStore` on a new uniquely named bucket with versioning and object lock, emptied and
dropped afterwards (SeaweedFS gives every bucket volumes of its own, which only dropping
the bucket gives back).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

from storage.s3 import EmbeddedSeaweed, ObjectStore

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# A graceful stop waits 15 s on SeaweedFS's filer; the session's temp dir is thrown away,
# so a kill after a short grace costs nothing.
STOP_GRACE_SECONDS = 3.0


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSeaweed]:
    """One embedded SeaweedFS for the whole session."""
    server = EmbeddedSeaweed(tmp_path_factory.mktemp("seaweed"), s3_port=0)
    server.start(timeout=90)
    try:
        yield server
    finally:
        server.stop(timeout=STOP_GRACE_SECONDS)


@pytest.fixture
def object_store(seaweed: EmbeddedSeaweed) -> Iterator[ObjectStore]:
    """An ObjectStore on a bucket of this test's own (versioned, object lock asked for)."""
    bucket = f"t-{uuid.uuid4().hex[:24]}"
    store = ObjectStore(endpoint_url=seaweed.endpoint_url, bucket=bucket,
                        credentials=seaweed.credentials)
    try:
        store.ensure_bucket(object_lock=True)
        yield store
    finally:
        store.close()
        if seaweed.is_running():
            drop_bucket(seaweed, bucket)


def raw_client(seaweed: EmbeddedSeaweed) -> S3Client:
    """A plain boto3 client on the embedded server: another S3 client, for what tests do
    behind the store's back. Close it."""
    client: S3Client = boto3.session.Session().client(
        "s3", endpoint_url=seaweed.endpoint_url, region_name="us-east-1",
        aws_access_key_id=seaweed.credentials.access_key_id,
        aws_secret_access_key=seaweed.credentials.secret_access_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))
    return client


def drop_bucket(seaweed: EmbeddedSeaweed, bucket: str) -> None:
    """Delete every version of every key (past governance retention) and the bucket."""
    client = raw_client(seaweed)
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            for entry in entries:
                client.delete_object(Bucket=bucket, Key=entry["Key"],
                                     VersionId=entry["VersionId"],
                                     BypassGovernanceRetention=True)
        client.delete_bucket(Bucket=bucket)
    finally:
        client.close()
