"""The HTTP service: ``POST /predict``, ``GET /health``, ``GET /metadata``.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart). Requests that arrive together
are run as one batch (dynamic batching): each request decodes its image in a worker thread,
then waits on a queue that a single loop drains into batches of at most ``max_batch_size``,
waiting at most ``max_wait_ms`` for company.

What a request may hold is bounded by what it makes the server do, not by how many requests
there are. A body must arrive within ``read_timeout`` seconds and, after its first seconds, at
``min_body_rate`` bytes a second on average (else 408 and the connection is closed); a request
counts towards the ``max_concurrent`` predictions in progress only once its body has arrived, so
clients trickling bodies hold connections, never prediction slots. Before an image is decoded its
header's width x height x channels is reserved from ``max_decoded_bytes``, a budget shared by every
request; an image that does not fit now gets 503 with Retry-After (one larger than the whole budget,
413), so concurrent decompression bombs cannot take the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import socket
import threading
from dataclasses import asdict
from typing import Optional

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ResnetsError, UsageError
from .images import ImageDecodeError, check_image_size, decode_image, header_size, preprocess
from .server_config import BODY_GRACE_S, ServerConfig
from .session import InferenceSession, check_finite

RAW_CONTENT_TYPES = ("application/octet-stream",)
# seconds a client told 503 (busy, or no decoding memory free now) is asked to wait before trying again
RETRY_AFTER_S = 1


# after decoding an image this large, freed memory is handed back to the system (see _give_back_memory)
GIVE_BACK_ABOVE = 16 * 1024 * 1024


def _malloc_trim():
    """glibc's malloc_trim, or None (another C library)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def _give_back_memory() -> None:
    """Return the free memory of every malloc arena to the system. Pillow decodes in 16 MiB blocks, which
    glibc serves from per-thread arenas once its mmap threshold has grown: freed, they stayed resident (a
    server 600 MB larger after one 8000x8000 image); trimmed, the process is back to its size before."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class DecodeBudget:
    """Bytes of decoded pixels in flight across requests: reserved in the event loop before an image is
    decoded, given back by the worker thread when its decoding ends (a request whose client went away
    still holds its share until the decoder lets go of the memory)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        self.peak = 0  # the most ever reserved at once
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        with self._lock:
            if self.in_use + size > self.limit:
                return False
            self.in_use += size
            self.peak = max(self.peak, self.in_use)
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.in_use -= size


class DynamicBatcher:
    """Collects single preprocessed images into batches for an InferenceSession."""

    def __init__(self, session: InferenceSession, max_batch_size: int, max_wait_s: float):
        self.session = session
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.batches_run = 0
        self.images_run = 0
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, image: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The logits of one image and the size of the batch it ran in."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(items) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            batch = torch.stack([image for image, _ in items])
            try:
                logits = await loop.run_in_executor(None, self.session.run, batch)
            except Exception as error:  # one failing batch must not stop the server
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches_run += 1
            self.images_run += len(items)
            for row, (_, future) in zip(logits, items):
                if not future.done():
                    future.set_result((row, len(items)))


def _describe(problem: dict) -> str:
    """One validation problem as 'top_k: <what pydantic says>, got 'abc''."""
    where = ".".join(str(part) for part in problem["loc"][1:]) or str(problem["loc"][0])  # drop "query"
    got = f", got {problem['input']!r}" if "input" in problem else ""
    return f"{where}: {problem['msg']}{got}"


def create_app(session: InferenceSession, config: Optional[ServerConfig] = None):
    """The FastAPI application serving ``session``."""
    config = config or ServerConfig()
    batcher = DynamicBatcher(session, config.max_batch_size, config.max_wait_ms / 1000.0)
    budget = DecodeBudget(config.max_decoded_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if config.warm_up:
            shape = (config.max_batch_size, *session.preprocessing.input_size)
            await run_in_threadpool(session.run, torch.zeros(shape))
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"resnets: {session.arch}", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.decode_budget = budget
    app.state.in_progress = 0  # /predict requests now running; the event loop is one thread, so no lock

    # Starlette's class, which FastAPI's extends: routing's own 404 and 405 get the {"error": ...} shape too
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    # a query that does not parse (top_k=abc) would get FastAPI's {"detail": [...]}; one shape for every 4xx
    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        return JSONResponse({"error": "; ".join(map(_describe, error.errors()))}, status_code=422)

    async def read_limited(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise HTTPException(413, f"request body of {declared} bytes is over the limit of "
                                     f"{config.max_body_bytes} bytes")
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream = request.stream().__aiter__()
        while True:
            # the whole body within read_timeout, and no slower than min_body_rate once past the grace period:
            # a client dripping a byte a second is cut off after seconds, not after the whole timeout
            deadline = started + config.read_timeout
            if config.min_body_rate > 0:
                deadline = min(deadline, started + BODY_GRACE_S + size / config.min_body_rate)
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), max(deadline - loop.time(), 0.0))
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                elapsed = loop.time() - started
                # closing the connection stops a client that is still dripping the body
                if elapsed < config.read_timeout:
                    detail = (f"request body arriving at {size / elapsed:.0f} bytes/s, under the minimum of "
                              f"{config.min_body_rate:g} bytes/s (min_body_rate); send it at once")
                else:
                    detail = (f"request body not received within {config.read_timeout:g} s (read_timeout); "
                              "send it at once")
                raise HTTPException(408, detail, headers={"Connection": "close"}) from None
            size += len(chunk)
            if size > config.max_body_bytes:
                raise HTTPException(413, f"request body is over the limit of {config.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def image_bytes(request: Request) -> tuple[bytes, str]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            body = await read_limited(request)

            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}

            # the body is already read (and bounded); parse it from memory
            try:
                form = await Request(request.scope, replay).form(max_files=1, max_fields=8,
                                                                 max_part_size=config.max_body_bytes)
            except Exception as error:
                raise HTTPException(400, f"malformed multipart body: {error}") from None
            upload = form.get("file") or next((v for v in form.values() if hasattr(v, "read")), None)
            if upload is None or not hasattr(upload, "read"):
                raise HTTPException(400, "multipart body has no file field (send the image as 'file')")
            return await upload.read(), upload.filename or "file"
        if content_type.startswith("image/") or content_type in RAW_CONTENT_TYPES:
            return await read_limited(request), "body"
        raise HTTPException(415, f"unsupported content type {content_type or '(none)'!r}: send an image as "
                                 "image/*, application/octet-stream or multipart/form-data with a 'file' field")

    @app.get("/health")
    async def health():
        return {"status": "ok", "backend": session.backend, "precision": session.precision}

    @app.get("/metadata")
    async def metadata():
        meta = session.metadata()
        meta["server"] = asdict(config)
        meta["batches_run"], meta["images_run"] = batcher.batches_run, batcher.images_run
        return meta

    @app.post("/predict")
    async def predict(request: Request, top_k: Optional[int] = None):
        # the configured default is capped at the model's classes, as predict caps it (top 5 of 3 classes: 3);
        # a request's own ?top_k= beyond them is refused
        k = min(config.top_k, session.num_classes) if top_k is None else top_k
        if not 1 <= k <= session.num_classes:
            raise HTTPException(422, f"top_k must be between 1 and {session.num_classes}, got {k}")
        data, source = await image_bytes(request)  # no slot held while the body arrives
        if not data:
            raise HTTPException(400, "empty request body: send an image")
        if app.state.in_progress >= config.max_concurrent:
            raise HTTPException(503, f"busy: {config.max_concurrent} requests already in progress "
                                     "(max_concurrent); retry shortly", headers={"Retry-After": str(RETRY_AFTER_S)})
        app.state.in_progress += 1
        try:
            return await answer(data, source, k)
        finally:
            app.state.in_progress -= 1

    async def answer(data: bytes, source: str, k: int) -> dict:
        image = await decode(data, source)
        if image.shape[0] != session.preprocessing.input_size[0]:
            raise HTTPException(400, f"{source}: model expects {session.preprocessing.input_size[0]} channels")
        logits, batch_size = await batcher.submit(image)
        try:
            check_finite(logits[None])
        except ResnetsError as error:  # the server's weights, not the request, are at fault
            raise HTTPException(500, str(error)) from None
        probabilities = torch.softmax(logits, dim=0)
        values, indices = probabilities.topk(k)
        return {"predictions": [{"label": int(i), "name": session.classes[int(i)], "probability": float(p)}
                                for p, i in zip(values, indices)],
                "arch": session.arch, "backend": session.backend, "precision": session.precision,
                "batch_size": batch_size}

    async def decode(data: bytes, source: str) -> torch.Tensor:
        """The preprocessed image, its decoding memory reserved from the budget first (by its header)."""
        size = header_size(data)
        needed = 0
        if size is not None:  # a header that does not read: decode_image names the problem, decoding nothing
            width, height, channels = size
            try:
                check_image_size(width, height, source)
            except ImageDecodeError as error:
                raise HTTPException(400, str(error)) from None
            needed = width * height * max(channels, 3)  # decoded as RGB
            if needed > budget.limit:
                raise HTTPException(413, f"{source}: {width}x{height} pixels decode to {needed:,} bytes, over "
                                         f"this server's decoding budget of {budget.limit:,} bytes "
                                         "(max_decoded_bytes); scale the image down first")
            if not budget.reserve(needed):
                raise HTTPException(503, f"busy: decoding {width}x{height} pixels needs {needed:,} bytes and "
                                         f"{budget.in_use:,} of the {budget.limit:,} bytes for decoding "
                                         "(max_decoded_bytes) are in use; retry shortly",
                                    headers={"Retry-After": str(RETRY_AFTER_S)})

        def work() -> torch.Tensor:
            try:
                return preprocess(decode_image(data, source=source), session.preprocessing)
            finally:  # in the worker: the memory is free only once decoding ends, whoever awaits it
                budget.release(needed)
                if needed >= GIVE_BACK_ABOVE:
                    _give_back_memory()

        try:
            return await run_in_threadpool(work)
        except ImageDecodeError as error:
            raise HTTPException(400, str(error)) from None
        except MemoryError:  # the machine's memory, not the budget, ran out: the request may succeed later
            raise HTTPException(503, f"{source}: out of memory decoding the image; retry shortly",
                                headers={"Retry-After": str(RETRY_AFTER_S)}) from None

    return app


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: any free port), or the UsageError naming the address
    and why it cannot be used (not an address of this machine, in use, a privileged port): checked
    before a model is loaded, and said in one line rather than in the server's log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise UsageError(f"--host {host}: not an address to listen on ({getattr(error, 'strerror', error)}); "
                         f"give an IP address of this machine such as 127.0.0.1, or 0.0.0.0 for all") from None
    sock = socket.socket(family, kind, proto)
    try:
        # as uvicorn does: a restarted server may take the port back from connections closing
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # uvicorn's backlog: from here connections queue until the server takes them
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}; choose another --port "
                         f"(0 for any free one) or --host") from None
    return sock


def serve(session: InferenceSession, config: Optional[ServerConfig] = None,
          sock: Optional[socket.socket] = None) -> None:
    """Run the service with uvicorn until interrupted, on ``sock`` (from :func:`listen`) or on a
    socket bound to ``config.host``:``config.port``."""
    import uvicorn

    config = config or ServerConfig()
    # weights that compute NaN on a blank image would answer every request with an error: said before serving
    blank = torch.zeros(1, *session.preprocessing.input_size, device=session.config.device)
    with torch.inference_mode():
        check_finite(session.model(blank).float())
    sock = sock or listen(config.host, config.port)
    server = uvicorn.Server(uvicorn.Config(create_app(session, config), log_level="info"))
    host, port = sock.getsockname()[:2]
    # uvicorn names the address only of sockets it binds itself; this one listens already
    logging.getLogger("uvicorn.error").info("serving %s on http://%s:%d (Ctrl+C to stop)", session.arch,
                                            f"[{host}]" if ":" in host else host, port)
    with sock:
        server.run(sockets=[sock])
