"""Stage 2: fetch the bytes of every image, over HTTP(S) or from a folder in the GLDv2 layout.

HTTP safety: only http/https; the host is resolved first and refused when any address is
loopback, private, link-local, multicast or reserved (unless `allow_private_hosts`), and every
redirect target is checked the same way; bodies are streamed under a byte cap and a total
deadline, so a server that trickles or never ends cannot hold a worker.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import apache_beam as beam
import requests
import urllib3
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from schemas.records import Failure, FetchedImage, ManifestRow
from schemas.vocabulary import Reason, Stage
from transforms.plumbing.routing import route

STAGE = Stage.FETCH.value
USER_AGENT = "gld-curate/0.1 (GLDv2 dataset curation; +https://github.com/gld-curate)"

Resolver = Callable[[str], list[str]]


IMAGE_LAYOUTS = ("gldv2", "flat")


@dataclass(frozen=True)
class FetchConfig:
    """How images are fetched.

    Sources: the URLs, or `images_dir` (read `<images_dir>/a/b/c/<id>.jpg`, any Beam
    filesystem), or `tar_dir` (the official `images_NNN.tar` shards, see tar_shards.py).
    `retry_failed`: fetch again the rows an earlier run on the same output failed to ingest.
    Timeouts are seconds; `max_bytes` caps one image's body; `retries` applies to connection
    errors, 429 and 5xx only, with exponential backoff and jitter from `backoff_s`.
    `threads`: concurrent requests per worker (downloads wait on the network, not the CPU);
    `max_per_host` / `per_host_rps` cap concurrent requests and request starts per second to one
    host from one worker process (0 = no rate cap), so a run never hammers a single server.
    """

    images_dir: str = ""
    tar_dir: str = ""
    #: How `images_dir` is laid out: `gldv2` (`<dir>/a/b/c/<id>.jpg`) or `flat` (`<dir>/<id>.jpg`,
    #: e.g. the `jpg/` folder of Revisited Oxford/Paris).
    images_layout: str = "gldv2"
    retry_failed: bool = False
    allow_private_hosts: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 60.0
    max_bytes: int = 30 * 1024 * 1024
    max_redirects: int = 5
    retries: int = 2
    backoff_s: float = 0.5
    user_agent: str = USER_AGENT
    threads: int = 16
    max_per_host: int = 8
    per_host_rps: float = 0.0

    def __post_init__(self) -> None:
        if self.images_dir and self.tar_dir:
            raise ValueError("choose one source: images_dir (--images-dir) or tar_dir (--tar-dir)")
        if self.images_layout not in IMAGE_LAYOUTS:
            raise ValueError(f"images_layout must be one of {IMAGE_LAYOUTS}")
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s", "backoff_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        if self.max_redirects < 0 or self.retries < 0:
            raise ValueError("max_redirects and retries must be >= 0")
        if self.threads < 1 or self.max_per_host < 1:
            raise ValueError("threads and max_per_host must be >= 1")
        if self.per_host_rps < 0:
            raise ValueError("per_host_rps must be >= 0")
        if not self.user_agent.strip():
            raise ValueError("user_agent must not be empty")


class HostGate:
    """Per-host politeness for one worker process: at most `max_concurrent` requests in flight
    to a host, and request starts at least `1 / rps` seconds apart (rps 0: no spacing)."""

    def __init__(self, max_concurrent: int, rps: float) -> None:
        self._max = max_concurrent
        self._interval = 1.0 / rps if rps > 0 else 0.0
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._next_start: dict[str, float] = {}

    @contextmanager
    def enter(self, host: str) -> Iterator[None]:
        with self._lock:
            slot = self._slots.setdefault(host, threading.BoundedSemaphore(self._max))
        with slot:
            if self._interval:
                with self._lock:
                    now = time.monotonic()
                    start = max(now, self._next_start.get(host, now))
                    self._next_start[host] = start + self._interval
                time.sleep(max(0.0, start - now))
            yield


#: One gate per (limit, rate) per process: every DoFn instance of a worker shares it.
_GATES: dict[tuple[int, float], HostGate] = {}
_GATES_LOCK = threading.Lock()


def host_gate(config: FetchConfig) -> HostGate:
    key = (config.max_per_host, config.per_host_rps)
    with _GATES_LOCK:
        if key not in _GATES:
            _GATES[key] = HostGate(*key)
        return _GATES[key]


def resolve_host(host: str) -> list[str]:
    """All IP addresses a host name resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({info[4][0] for info in infos})


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        # not is_global adds the shared 100.64.0.0/10 range (carrier NAT, some cloud metadata services)
        or not ip.is_global
    )


def check_url(url: str, allow_private: bool, resolver: Resolver) -> tuple[Reason, str] | None:
    """None when `url` may be fetched, else (bad_url | blocked_host, detail)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        return Reason.BAD_URL, f"unparseable url: {exc}"
    if parts.scheme not in ("http", "https"):
        return Reason.BAD_URL, f"scheme {parts.scheme!r} is not http(s)"
    if not host:
        return Reason.BAD_URL, "url has no host"
    if allow_private:
        return None
    addresses = resolver(host)
    if not addresses:
        return Reason.CONNECTION_ERROR, f"host {host!r} does not resolve"
    blocked = [a for a in addresses if not _is_public(a)]
    if blocked:
        return Reason.BLOCKED_HOST, f"host {host!r} resolves to non-public {', '.join(blocked)}"
    return None


def _status_failure(status: int) -> Reason:
    if status == 404:
        return Reason.HTTP_404
    return Reason.HTTP_5XX if status >= 500 else Reason.HTTP_4XX


def _retry_delay(config: FetchConfig, attempt: int, retry_after: str | None) -> float:
    value = (retry_after or "").strip()
    if value.isascii() and value.isdigit():
        return min(float(value), config.total_timeout_s)
    return config.backoff_s * (2**attempt) * (0.5 + random.random())


def _body_chunks(response: requests.Response, chunk_size: int) -> Iterator[bytes]:
    """The body as it arrives, one socket read per chunk, so that a caller's deadline is checked
    at least every read timeout (`iter_content` blocks until a whole chunk is in, which a
    trickling server can stretch indefinitely). Errors are raised as `iter_content` would, except
    that a read timeout is a `requests.Timeout`, not a connection error."""
    raw = response.raw
    if not hasattr(raw, "read1"):  # urllib3 < 2.3
        yield from response.iter_content(chunk_size=chunk_size)
        return
    try:
        while chunk := raw.read1(chunk_size, decode_content=True):
            yield chunk
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


def _read_body(response: requests.Response, config: FetchConfig, deadline: float) -> bytes | tuple[Reason, str]:
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > config.max_bytes:
        return Reason.TOO_LARGE, f"Content-Length {declared} > {config.max_bytes}"
    chunks: list[bytes] = []
    size = 0
    for chunk in _body_chunks(response, 64 * 1024):
        size += len(chunk)
        if size > config.max_bytes:
            return Reason.TOO_LARGE, f"body exceeds {config.max_bytes} bytes"
        if time.monotonic() > deadline:
            return Reason.TIMEOUT, f"body not complete after {config.total_timeout_s:g} s"
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class _Refusal:
    """Why one attempt failed, and whether (and when) another attempt may succeed."""

    reason: Reason
    detail: str
    retryable: bool = False
    retry_after: str | None = None


def _get_once(
    session: requests.Session, url: str, config: FetchConfig, resolver: Resolver, deadline: float, gate: HostGate
) -> bytes | _Refusal:
    """One attempt, following redirects by hand so that every target is checked."""
    for _ in range(config.max_redirects + 1):
        refused = check_url(url, config.allow_private_hosts, resolver)
        if refused:
            return _Refusal(*refused)
        with (
            gate.enter(urlsplit(url).hostname or ""),
            session.get(
                url,
                stream=True,
                allow_redirects=False,
                timeout=(config.connect_timeout_s, config.read_timeout_s),
                headers={"User-Agent": config.user_agent},
            ) as response,
        ):
            if response.is_redirect:
                url = urljoin(url, response.headers.get("Location", ""))
                continue
            status = response.status_code
            if status != 200:
                return _Refusal(
                    _status_failure(status),
                    f"HTTP {status} {response.reason}",
                    retryable=status == 429 or status >= 500,
                    retry_after=response.headers.get("Retry-After"),
                )
            body = _read_body(response, config, deadline)
            return _Refusal(*body) if isinstance(body, tuple) else body
    return _Refusal(Reason.HTTP_4XX, f"more than {config.max_redirects} redirects")


def fetch_http(
    session: requests.Session,
    row: ManifestRow,
    config: FetchConfig,
    resolver: Resolver = resolve_host,
    gate: HostGate | None = None,
) -> FetchedImage | Failure:
    """Download `row.url`. Failure reasons: bad_url, blocked_host, http_404, http_4xx,
    http_5xx, timeout, connection_error, too_large."""
    gate = gate or host_gate(config)
    deadline = time.monotonic() + config.total_timeout_s
    for attempt in range(config.retries + 1):
        try:
            outcome = _get_once(session, row.url, config, resolver, deadline, gate)
        except requests.Timeout as exc:
            outcome = _Refusal(Reason.TIMEOUT, f"{type(exc).__name__}: {exc}", retryable=True)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            outcome = _Refusal(Reason.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}", retryable=True)
        except requests.RequestException as exc:
            outcome = _Refusal(Reason.BAD_URL, f"{type(exc).__name__}: {exc}")
        if isinstance(outcome, bytes):
            return FetchedImage(row=row, data=outcome)
        delay = _retry_delay(config, attempt, outcome.retry_after)
        if not outcome.retryable or attempt == config.retries or time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
    return Failure(row.line, row.id, row.landmark_id, Stage.FETCH, outcome.reason, outcome.detail, row.url)


def image_path(images_dir: str, image_id: str, layout: str = "gldv2") -> str:
    """GLDv2 on-disk layout: `<dir>/<id[0]>/<id[1]>/<id[2]>/<id>.jpg`; `flat`: `<dir>/<id>.jpg`."""
    if layout == "flat":
        return FileSystems.join(images_dir, f"{image_id}.jpg")
    return FileSystems.join(images_dir, image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")


def read_from_dir(row: ManifestRow, config: FetchConfig) -> FetchedImage | Failure:
    """Read the image file; failure reasons: missing_file, too_large, read_error."""
    if (
        len(row.id) < 3 and config.images_layout == "gldv2"
    ):  # the a/b/c layout needs three characters; a shorter id cannot have a file
        detail = f"id {row.id!r} is too short for the <dir>/a/b/c/<id>.jpg layout"
        return Failure(row.line, row.id, row.landmark_id, Stage.FETCH, Reason.MISSING_FILE, detail, row.url)
    path = image_path(config.images_dir, row.id, config.images_layout)
    try:
        if not FileSystems.exists(path):
            return Failure(row.line, row.id, row.landmark_id, Stage.FETCH, Reason.MISSING_FILE, path, row.url)
        with FileSystems.open(path) as handle:
            data = handle.read(config.max_bytes + 1)
    except OSError as exc:
        return Failure(row.line, row.id, row.landmark_id, Stage.FETCH, Reason.READ_ERROR, f"{path}: {exc}", row.url)
    if len(data) > config.max_bytes:
        detail = f"{path} exceeds {config.max_bytes} bytes"
        return Failure(row.line, row.id, row.landmark_id, Stage.FETCH, Reason.TOO_LARGE, detail, row.url)
    return FetchedImage(row=row, data=data)


class _FetchFn(beam.DoFn):
    """Fetches with `config.threads` requests in flight per DoFn instance, over one pooled
    HTTP session (created in `setup`). Results are emitted as they complete; whatever is still
    in flight at the end of a bundle is awaited in `finish_bundle`."""

    def __init__(self, config: FetchConfig) -> None:
        self._config = config
        self._session: requests.Session | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def setup(self) -> None:
        size = self._config.threads
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=size, pool_maxsize=size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="gld-fetch")

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._session is not None:
            self._session.close()

    def start_bundle(self) -> None:
        self._pending = []

    def _fetch(self, row: ManifestRow) -> tuple[FetchedImage | Failure, float]:
        started = time.perf_counter()
        if self._config.images_dir:
            result = read_from_dir(row, self._config)
        else:
            assert self._session is not None
            result = fetch_http(self._session, row, self._config)
        return result, time.perf_counter() - started

    def _collect(self, future: Future) -> FetchedImage | Failure:
        # Counters are updated here, on the bundle's thread: Beam's metrics context is per thread.
        result, seconds = future.result()
        Metrics.counter(STAGE, "busy_ms").inc(int(seconds * 1000))
        if isinstance(result, FetchedImage):
            Metrics.counter(STAGE, "bytes").inc(len(result.data))
        return result

    def process(self, row: ManifestRow) -> Iterator[FetchedImage | Failure]:
        assert self._pool is not None
        self._pending.append(self._pool.submit(self._fetch, row))
        if len(self._pending) >= 2 * self._config.threads:
            wait(self._pending, return_when=FIRST_COMPLETED)
        still: list[Future] = []
        for future in self._pending:
            if future.done():
                yield self._collect(future)
            else:
                still.append(future)
        self._pending = still

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for future in self._pending:
            yield GlobalWindows.windowed_value(self._collect(future))
        self._pending = []


class FetchImages(beam.PTransform):
    """ManifestRow PCollection -> (FetchedImage PCollection, Failure PCollection)."""

    def __init__(self, config: FetchConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, rows: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        fetched = rows | "Fetch" >> beam.ParDo(_FetchFn(self._config))
        return route("RouteFetched", fetched, STAGE)
