"""A real S3 API on loopback (moto's server, in this process's threads) for bucket-storage tests.
Moto keeps its buckets per process, not per server: each test module uses buckets of its own.

``s3_env(server)`` is the environment a client (pyarrow, Ray workers) reaches it with: endpoint,
dummy credentials, and no instance-metadata lookups (there is no cloud here to ask).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def s3_server(*buckets: str) -> Iterator[dict[str, str]]:
    """Start the server with ``buckets`` created; yields the environment that reaches it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "dotseg-test",
            "AWS_SECRET_ACCESS_KEY": "dotseg-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        for bucket in buckets:
            client(env).create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()


def client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def read(env: dict[str, str], bucket: str, key: str) -> bytes:
    return bytes(client(env).get_object(Bucket=bucket, Key=key)["Body"].read())


def put(env: dict[str, str], bucket: str, key: str, data: bytes) -> None:
    client(env).put_object(Bucket=bucket, Key=key, Body=data)


def keys(env: dict[str, str], bucket: str, prefix: str = "") -> list[str]:
    """Every object key under ``prefix`` in ``bucket``."""
    pages = client(env).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    # pyarrow also writes empty "dir/" marker objects; they hold nothing.
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/"))
