"""Raw HTTP connections to a test server: a request whose body has not arrived, and the answer read to the end."""

from __future__ import annotations

import json
import socket


def open_upload(url: str, length: int = 1000, timeout: float = 6.0) -> socket.socket:
    """A raw connection that has sent a /predict request's headers (a ``length``-byte PNG body announced) and
    none of its body."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    client = socket.create_connection((host, int(port)), timeout=timeout)
    client.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
                   f"Content-Length: {length}\r\n\r\n".encode())
    return client


def read_until_closed(client: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the answer, read until the server closes the connection."""
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)
