"""What ``resnets serve`` takes, said once: the command's flags are built from these fields.

Apart from :mod:`resnets.deploy.server`, so that building the command line does not import the
optional ``serve`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._options import check_bounds, option
from ..errors import UsageError

# a body's first seconds are not held to min_body_rate (a connection's start, a client's first write)
BODY_GRACE_S = 2.0


@dataclass
class ServerConfig:
    """How the HTTP service listens, batches and bounds its clients."""

    host: str = option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    port: int = option(8000, help="TCP port (0: any free one)", low=0, high=65535)
    top_k: int = option(5, help="classes in each answer (a request's ?top_k= may ask for others)", low=1)
    max_body_bytes: int = option(10 * 1024 * 1024, help="largest request body (else 413)", low=1)
    max_batch_size: int = option(16, help="images run as one batch at most", low=1)
    max_wait_ms: float = option(5.0, help="how long a request waits for others to batch with", low=0)
    # run one batch of max_batch_size at start-up, so the backend choice is not paid by a client
    warm_up: bool = option(True, cli=False)
    # the whole body, not each read: a per-read timeout would let a client drip one byte at a time
    read_timeout: float = option(30.0, help="seconds to receive a whole body (else 408)", low=0, low_open=True)
    # a body trickling in holds a connection, never a prediction slot or decoding memory; below this rate
    # (after the first BODY_GRACE_S seconds) it is cut off long before read_timeout
    min_body_rate: float = option(16384.0, help=f"bytes a second a body must arrive at, on average, after its "
                                                f"first {BODY_GRACE_S:g} s (else 408; 0: no minimum)", low=0)
    # a few batches' worth, so a burst is batched while a flood is told to come back instead of
    # queueing without end
    max_concurrent: int = option(64, help="predictions in progress at once, each counted once its body has "
                                          "arrived: decoding or waiting for a batch (more get 503)", low=1)
    # what decoding takes is set by the image's header, not by its bytes: a 200 KB PNG decodes to 192 MB
    max_decoded_bytes: int = option(256 * 1024 * 1024,
                                    help="decoded pixels in flight across requests, in bytes (width x height x "
                                         "channels of each image being decoded; more get 503)", low=1)

    def __post_init__(self) -> None:
        # refused here, not when the first request or the listening socket would meet them
        check_bounds(self)
        if not isinstance(self.host, str) or not self.host:
            raise UsageError(f"host must be an address such as 127.0.0.1 or 0.0.0.0, got {self.host!r}")


__all__ = ["BODY_GRACE_S", "ServerConfig"]
