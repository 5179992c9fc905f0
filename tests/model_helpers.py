"""Helpers for tests that compare networks, and a loopback server of a checkpoint."""

import contextlib
import functools
import hashlib
import http.server
import io
import threading
from pathlib import Path

import torch
from torch import nn


def randomise_bn(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine parameters: fresh ones are 0/1, so a wrong key
    mapping would not show in the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """A loopback file server that records the paths it was asked for (``CountingHandler.requests``)."""

    requests: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        CountingHandler.requests.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def served_state_dict(folder: Path):
    """A resnet20 (random BatchNorm statistics) saved as torchvision saves its weights (torch.save of a state
    dict, the sha256 prefix in the name) in ``folder``, served over loopback HTTP; yields (model, url, sha256,
    the file's bytes), with ``CountingHandler.requests`` emptied."""
    import resnets

    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CountingHandler,
                                                                                  directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model = randomise_bn(resnets.create_model("resnet20")).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    name = f"resnet20-{digest[:8]}.pth"
    (folder / name).write_bytes(buffer.getvalue())
    CountingHandler.requests = []
    try:
        yield model, f"http://127.0.0.1:{server.server_address[1]}/{name}", digest, buffer.getvalue()
    finally:
        server.shutdown()
        server.server_close()
