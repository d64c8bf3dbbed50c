"""A loopback S3 server (moto's server mode) for the scale-out tests and benchmarks: DVC remotes,
LanceDB tables and Evidently workspaces on `s3://` URIs, without leaving 127.0.0.1."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass

KEY, SECRET, REGION = "testing", "testing", "us-east-1"  # moto accepts any credentials


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackS3:
    endpoint: str  # http://127.0.0.1:PORT

    @property
    def env(self) -> dict[str, str]:
        """What a child process needs: credentials and region through the usual AWS variables (never
        params.yaml); the endpoint for botocore/s3fs (DVC) and object_store (LanceDB)."""
        return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                            region_name=REGION)

    def bucket(self, name: str) -> str:
        """Create a bucket (idempotent); returns its s3:// URI."""
        cli = self.client()
        if name not in {b["Name"] for b in cli.list_buckets().get("Buckets", [])}:
            cli.create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    @contextmanager
    def environ(self):
        """These credentials in this process's environment, for the duration."""
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@contextmanager
def loopback_s3():
    """Start moto's threaded server on a free loopback port; stop it on exit."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield LoopbackS3(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
