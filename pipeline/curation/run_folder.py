"""A run folder's life: lock -> mark in progress and clear the previous run's outputs -> work ->
`run.json` last (the commit marker) -> unlock.

Writers (`gld curate`, `gld select`, `gld ingest`, `gld overlap`) hold `run.lock` while they
write: one writer per folder. A run that changes the folder's outputs first writes
`run.in-progress.json` (who started it, and the command that finishes the folder) and only then
deletes `run.json` and the rest of the previous run's outputs, so a reader never sees a
`run.json` beside half-replaced tables. It commits by writing `run.json` and then removing the
marker. Readers of a run (`gld select`, `gld audit`, `gld overlap`, `gld review`) trust only a
folder with `run.json` and no marker; `finished_run` is the one place that checks it and says
which command finishes the folder.

The stores (images, features, verified pairs, the failure log) are not outputs of one run:
they are committed part by part and reused by the next run, so a killed run loses only its
unfinished parts.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from apache_beam.io.filesystems import FileSystems

RUN_JSON = "run.json"
IN_PROGRESS = "run.in-progress.json"
LOCK = "run.lock"


class UnfinishedRun(FileNotFoundError):
    """The folder holds no finished run (no `run.json`, or a run in progress or killed)."""


class FolderInUse(OSError):
    """Another live writer holds the folder's lock."""


@dataclass(frozen=True)
class Holder:
    """Who holds a folder: the command, host, process id and start time (UTC, ISO 8601)."""

    command: str
    host: str
    pid: int
    started: str

    @classmethod
    def this_process(cls, command: str) -> Holder:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return cls(command, socket.gethostname(), os.getpid(), now)

    def describe(self) -> str:
        return f"`{self.command}` (host {self.host}, pid {self.pid}, started {self.started})"


def _path(output: str, name: str) -> str:
    return FileSystems.join(output, name)


def _read_json(path: str) -> Any:
    """The parsed file, or None when it does not exist."""
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def _encode(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json_atomically(path: str, value: Any) -> None:
    """Write JSON under a temporary name beside `path`, then rename: readers see all or nothing."""
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temporary) as handle:
        handle.write(_encode(value))
    FileSystems.rename([temporary], [path])


def in_progress(output: str) -> dict[str, Any] | None:
    """The marker of a run that started in `output` and has not committed (running or killed)."""
    return _read_json(_path(output, IN_PROGRESS))


def _unfinished_message(output: str, command: str, marker: dict[str, Any]) -> str:
    return (
        f"{output} holds an unfinished run: {marker['command']} started there at {marker['started']} and has not "
        f"finished (it is running, or was killed); `{command}` needs a finished run: "
        f"run `{marker['finish']}` to finish it (it reuses what the stores kept)"
    )


def finished_run(output: str, command: str) -> dict[str, Any]:
    """The parsed `run.json` of `output`. Raises `UnfinishedRun` naming `command` (the reader,
    e.g. "gld select") and the command that finishes the folder when it has no finished run:
    no `run.json`, or a run marked in progress."""
    marker = in_progress(output)
    if marker is not None:
        raise UnfinishedRun(_unfinished_message(output, command, marker))
    run = _read_json(_path(output, RUN_JSON))
    if run is None:
        raise UnfinishedRun(
            f"{output} holds no finished run (no {RUN_JSON}): `{command}` needs one; "
            f"run `gld curate --output {output} ...` first (it reuses what a killed run stored)"
        )
    return run


def rerun_base(output: str, command: str) -> dict[str, Any]:
    """What `command` (one that rewrites a finished run, `gld select`) starts from: the
    folder's finished run, or the one a killed run of the same command kept in its marker."""
    marker = in_progress(output)
    if marker is not None and marker["command"] == command and marker.get("base") is not None:
        return marker["base"]
    return finished_run(output, command)


def _remove(path: str) -> None:
    """Delete a file or a folder with everything under it, if it exists."""
    if FileSystems.exists(path):
        FileSystems.delete([path])
    # GCS has no folders: what lies under the prefix goes too
    under = FileSystems.match([FileSystems.join(path, "**")])[0].metadata_list
    if under:
        FileSystems.delete([m.path for m in under])


def begin_run(output: str, holder: Holder, finish: str, previous: Iterable[str], base: Any = None) -> None:
    """Mark `output` in progress, then remove `run.json` and every path of `previous` (the
    outputs a run makes, files or folders). `finish`: the command that finishes the folder if
    this run is killed; `base`: what a killed run of the same command needs to start again
    (the run `gld select` re-selects), kept in the marker."""
    marker = {**asdict(holder), "finish": finish, "base": base}
    write_json_atomically(_path(output, IN_PROGRESS), marker)
    _remove(_path(output, RUN_JSON))
    for path in previous:
        _remove(path)


def commit_run(output: str, run: dict[str, Any]) -> None:
    """Write `run.json` (atomically), then clear the in-progress marker: the run is finished."""
    write_json_atomically(_path(output, RUN_JSON), run)
    _remove(_path(output, IN_PROGRESS))


# -- the lock ------------------------------------------------------------------------------


def create_exclusively(path: str, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists; False when it does. Local files use
    O_EXCL and GCS objects a generation-0 precondition: both atomic. Other filesystems check
    and create (not atomic)."""
    scheme = FileSystems.get_scheme(path)
    if scheme in (None, "file"):
        try:
            descriptor = os.open(path.removeprefix("file://"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return True
    if scheme == "gs":
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud import storage

        bucket, _, name = path.removeprefix("gs://").partition("/")
        try:
            storage.Client().bucket(bucket).blob(name).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            return False
        return True
    if FileSystems.exists(path):
        return False
    with FileSystems.create(path) as handle:
        handle.write(data)
    return True


def _process_start(pid: int) -> float | None:
    """When process `pid` of this host started (epoch seconds), from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def is_stale(holder: Holder, host: str) -> bool:
    """Whether a lock taken by `holder` is left by a dead process: only decidable on its own
    `host`, where its pid is gone or now names a process started after the lock (pid reuse)."""
    if holder.host != host:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    started = _process_start(holder.pid)
    taken = datetime.datetime.fromisoformat(holder.started).timestamp()
    return started is not None and started > taken + 1


def _read_holder(path: str) -> Holder | None:
    try:
        found = _read_json(path)
        return Holder(**found) if isinstance(found, dict) else None
    except (OSError, ValueError, TypeError):  # half-written or foreign: not a live holder's
        return None


def _holds_anything(folder: str) -> bool:
    # GCS has no folders: one exists when something lies under it
    return bool(FileSystems.match([FileSystems.join(folder, "**")], limits=[1])[0].metadata_list)


def acquire_lock(output: str, holder: Holder, create: bool = True) -> None:
    """Take `output`'s lock for `holder`, taking over a stale one; raises FolderInUse when a
    live run holds it (or one on another host, which cannot be checked from here). Without
    `create` (a command that needs a run there), a folder that does not exist raises
    `finished_run`'s UnfinishedRun and is not made."""
    if not _holds_anything(output):
        if not create:
            finished_run(output, holder.command)  # raises UnfinishedRun: there is no run.json
        if not FileSystems.exists(output):
            FileSystems.mkdirs(output)
    path = _path(output, LOCK)
    data = _encode(asdict(holder))
    for _ in range(3):
        if create_exclusively(path, data):
            return
        found = _read_holder(path)
        if found is not None and not is_stale(found, holder.host):
            advice = "wait for it to finish" if found.host == holder.host else f"if that run is gone, delete {path}"
            raise FolderInUse(f"{output} is in use by {found.describe()}: {advice}, or use another --output")
        # stale (or unreadable): set it aside under a unique name; of two runs taking over,
        # only one rename succeeds and the other finds the new lock on its next try
        try:
            FileSystems.rename([path], [f"{path}.stale-{uuid.uuid4().hex}"])
        except OSError:
            continue
        _remove_stale_copies(output)
    raise FolderInUse(f"could not take the lock {path}: another run is taking it")


def _remove_stale_copies(output: str) -> None:
    stale = FileSystems.match([_path(output, f"{LOCK}.stale-*")])[0].metadata_list
    if stale:
        FileSystems.delete([m.path for m in stale])


def release_lock(output: str, holder: Holder) -> None:
    """Delete the lock if `holder` still holds it (never another run's)."""
    path = _path(output, LOCK)
    if _read_holder(path) == holder:
        FileSystems.delete([path])


@contextmanager
def locked(output: str, command: str, create: bool = True) -> Iterator[Holder]:
    """Hold `output`'s lock for the duration (see `acquire_lock`); yields the holder."""
    holder = Holder.this_process(command)
    acquire_lock(output, holder, create)
    try:
        yield holder
    finally:
        release_lock(output, holder)
