"""A real S3-compatible server for tests (moto's server mode on 127.0.0.1), and a proxy in front
of it that drops connections in the middle of responses, as a flaky network or store does."""

from __future__ import annotations

import os
import socket
import threading

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """moto's S3 in server mode on 127.0.0.1 (a port of its own), with a bucket; ``fs`` writes to it."""

    def __init__(self, bucket: str = "logs"):
        import logging

        import pyarrow.fs as pafs
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # (a line per request otherwise)
        for k, v in CREDENTIALS.items():
            os.environ.setdefault(k, v)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, self.port = self.server.get_host_and_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.fs = pafs.S3FileSystem(endpoint_override=self.endpoint, region="us-east-1",
                                    access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                    secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], allow_bucket_creation=True)
        self.fs.create_dir(bucket)

    def upload(self, local: str, key: str) -> None:
        with open(local, "rb") as f, self.fs.open_output_stream(f"{self.bucket}/{key}") as out:
            out.write(f.read())

    def uri(self, key: str, endpoint: str | None = None) -> str:
        return f"s3://{self.bucket}/{key}?endpoint_override={endpoint or self.endpoint}&region=us-east-1"

    def stop(self) -> None:
        self.server.stop()


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 to ``port`` that, ``drops`` times, cuts the connection once
    ``every`` more response bytes have passed: mid-response, as a network that fails does."""

    def __init__(self, port: int, every: int, drops: int):
        self.upstream, self.every, self.left = port, every, drops
        self.cut_all = False  # set: every response is cut (a store that keeps failing)
        self.passed = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, response: bool) -> None:
        try:
            while True:
                data = source.recv(16384)
                if not data:
                    break
                if response:
                    with self.lock:
                        self.passed += len(data)
                        cut = self.cut_all or (self.left > 0 and self.passed >= self.every)
                        if cut:
                            self.left -= 1
                            self.dropped += 1
                            self.passed = 0
                    if cut:
                        sink.send(data[: len(data) // 2])
                        break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.open = False
        self.listener.close()
