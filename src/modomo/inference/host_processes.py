"""Host processes: an AI worker's decoding and per-scene post-processing in separate
processes, so they scale across cores while the worker's own process feeds the device.

Palettes' k-means, RLE and depth statistics are many small NumPy calls that hold the GIL: on
threads, a second host thread mostly waits for the first (``bench/ai_host.py`` measured 0.9 to
1.4 times the images/s of one). Each host process decodes a scene (from its file's bytes, or
takes one decoded on the device), keeps the full-size pixels, and hands back only the models'
reduced copy; the scene's model outputs are later sent to the same process, which finishes it
(masks pasted and encoded, palettes, depth PNG) and returns the rows. So a 12-megapixel image
crosses no process boundary; what does is a view of at most about a megapixel, the mask
logits and the rows.

Our own code rather than :mod:`multiprocessing` or :class:`~concurrent.futures.ProcessPoolExecutor`:
a Celery prefork child is a daemonic process, which those refuse to give children; their
workers survive a parent killed by the hard time limit or the OOM killer; and a pool cannot
send a scene's second call to the process that holds its pixels. A host process here is a
``python`` running this module's ``_main``, reading pickled requests from a pipe: when its
parent dies the pipe ends and so does it. A host process that dies (killed, out of memory)
fails the calls in flight on it with the reason and is started again for the next.

Wire format: :class:`multiprocessing.connection.Connection` on inherited pipe descriptors
(length-prefixed pickles), between this package's own processes only.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from modomo.images import LoadedImage
from modomo.inference.scene import Inferred, SceneResult

__all__ = ["FinishSpec", "HostProcessError", "HostProcesses", "HostedScene", "host_processes"]

log = logging.getLogger(__name__)

# a host process runs this module's own _serve (not a ``-m`` __main__ copy of the module: what
# it raises must unpickle as the package's classes)
_ENTRY = "from modomo.inference.host_processes import _main; _main()"

PIPE_BYTES = 1 << 20
"""Capacity asked for each pipe (Linux's default ``/proc/sys/fs/pipe-max-size``; the kernel's
own default is 64 KiB)."""


class HostProcessError(RuntimeError):
    """A host process ended (killed, out of memory) or lost a scene it held."""


@dataclass(frozen=True)
class FinishSpec:
    """How a host process finishes a scene (see :func:`~modomo.inference.scene.finish_scene`).

    Attributes:
        stages: the pipeline's stages.
        model_labels: ``{role: name@version}`` of the detector and segmenter.
        palette_size: colours per palette (k).
        sample_pixels: pixels per object for its palette and depth statistics.
    """

    stages: tuple[str, ...]
    model_labels: dict[str, str]
    palette_size: int
    sample_pixels: int


@dataclass(frozen=True)
class HostedScene:
    """A scene decoded and held by a host process, with the models' reduced copy of it.

    Attributes:
        view: (h, w, 3) uint8 RGB, the scene reduced for the models.
        size: the scene's ``(height, width)`` in pixels (upright).
        lane: index of the host process holding the scene's pixels.
        token: the scene's key in that process.
        pid: that process's pid.
    """

    view: np.ndarray
    size: tuple[int, int]
    lane: int
    token: tuple[int, int]
    pid: int

    def to_scene(self) -> np.ndarray:
        """(4,) float32 factors taking xyxy boxes from the view's pixels to the scene's."""
        from modomo.inference.pipeline import view_to_scene

        return view_to_scene(self.size, self.view.shape[:2])


class _Lane:
    """One host process, seen from the worker.

    Requests are pickled and written in turn (any thread, under ``_sending``), so the next
    is already in the pipe when the process ends one; a reader thread answers each
    request's future in order, as the process replies in order. A caller interrupted while
    it waits (a soft time limit) therefore leaves nothing behind in the pipe: only one
    interrupted while it writes does, and then this process goes and a fresh one replaces
    it on the next request.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self._sending = threading.Lock()  # one writer at a time; held while starting
        self._waiting = threading.Lock()  # guards _pending (the reader pops under it)
        self._pending: deque[Future[Any]] = deque()
        self._process: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The process's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Start the process and its reader (caller holds ``_sending``)."""
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        for end in (from_parent, to_parent):
            with contextlib.suppress(OSError):  # a larger pipe: a view in a few writes, not 40
                fcntl.fcntl(end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(to_child), str(from_child)],
                pass_fds=(to_child, from_child),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
            )
        finally:
            os.close(to_child)
            os.close(from_child)
        self._process = process
        self._send = Connection(from_parent, readable=False)
        with self._waiting:
            self._pending = pending = deque[Future[Any]]()
        reader = threading.Thread(
            target=self._read,
            args=(process, Connection(to_parent, writable=False), pending),
            name=f"host-process-{self.index}",
            daemon=True,
        )
        reader.start()

    def stop(self, *, kill: bool = False) -> None:
        """End the process (caller holds ``_sending``): at once with ``kill``, else when
        done with the request in hand (its pipe closed); its reader fails what it owed."""
        if self._send is not None:
            self._send.close()
            self._send = None
        if self._process is not None:
            try:
                self._process.wait(0 if kill else 2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def submit(self, request: tuple[Any, ...]) -> Future[Any]:
        """Send a request; its future gets the reply (or the error it raised there)."""
        future: Future[Any] = Future()
        with self._sending:
            if self._process is None or self._process.poll() is not None:
                self.stop(kill=True)
                self.start()
            assert self._send is not None
            with self._waiting:
                self._pending.append(future)
            try:
                self._send.send(request)
            except OSError:  # it ended; the reader fails the future with the exit code
                pass
            except BaseException:
                # interrupted mid-write: the rest of the request would garble the next
                self.stop(kill=True)
                raise
        return future

    def _read(self, process: subprocess.Popen[bytes], receive: Connection, pending: deque) -> None:
        try:
            receive.recv()  # ready: its imports are done
            while True:
                status, value = receive.recv()
                with self._waiting:
                    future = pending.popleft()
                if status == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (EOFError, OSError):
            pass
        except Exception:  # a reply that does not unpickle: the stream can no longer be trusted
            log.exception("host process %d sent a reply this process cannot read", process.pid)
            process.kill()
        finally:
            receive.close()
            try:
                code: int | None = process.wait(10)
            except subprocess.TimeoutExpired:
                code = None
            with self._waiting:
                owed = list(pending)
                pending.clear()
            why = _ended(process.pid, code)
            for future in owed:
                future.set_exception(HostProcessError(f"{why} with the scene in hand"))
            if owed:
                log.warning("%s", why)


def _ended(pid: int, code: int | None) -> str:
    """Why a host process ended, in words."""
    if code is not None and code < 0:
        return f"the host process (pid {pid}) ended, killed by signal {-code} (out of memory?)"
    return (
        f"the host process (pid {pid}) ended (exit code {code}; its error is in the worker's log)"
    )


class HostProcesses:
    """``count`` host processes, started at once (their imports overlap model loading).

    Thread-safe: any number of threads may call :meth:`load` and :meth:`finish`; each host
    process serves one call at a time.

    Args:
        count: host processes (>= 1).
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"host processes must be at least 1, not {count}")
        self._lanes = [_Lane(i) for i in range(count)]
        for lane in self._lanes:
            with lane._sending:
                lane.start()
        self._next = itertools.count()
        self._session = 0

    @property
    def count(self) -> int:
        """The number of host processes."""
        return len(self._lanes)

    def new_session(self) -> None:
        """Start a new run (a task's batch): each host process drops the scenes it still
        holds from earlier runs (one cut short leaves them) when it receives this run's
        first scene."""
        self._session += 1

    def load(
        self,
        data: bytes | LoadedImage,
        *,
        max_pixels: int,
        input_side: int,
        clock: Any | None = None,
    ) -> HostedScene:
        """Decode a scene in the next host process (round robin) and keep it there.

        Args:
            data: the image file's bytes, or an image already decoded (on the device).
            max_pixels: largest accepted ``width * height``.
            input_side: longer side of the models' copy (see
                :meth:`~modomo.inference.pipeline.DetectionPipeline.prepare`).
            clock: a :class:`~modomo.inference.clock.StageClock` that gets the process's
                ``decode`` and ``prepare`` seconds.

        Raises:
            ImageError: the image is not usable.
            HostProcessError: the host process ended.
        """
        number = next(self._next)
        lane = self._lanes[number % len(self._lanes)]
        token = (self._session, number)
        reply = lane.submit(("load", token, data, max_pixels, input_side))
        size, view, seconds, pid = reply.result()
        if clock is not None:
            clock.add(seconds)
        return HostedScene(view, size, lane.index, token, pid)

    def finish(
        self, scene: HostedScene, inferred: Inferred, spec: FinishSpec, clock: Any | None = None
    ) -> SceneResult:
        """Finish a scene in the host process that holds it, which then drops it.

        Raises:
            HostProcessError: the host process ended or no longer holds the scene.
            Exception: what :func:`~modomo.inference.scene.finish_scene` raised, with its
                stage noted.
        """
        lane = self._lanes[scene.lane]
        if lane.pid != scene.pid:
            raise HostProcessError(
                f"the host process that decoded the scene (pid {scene.pid}) ended before "
                "finishing it (killed, or out of memory?)"
            )
        result, seconds = lane.submit(("finish", scene.token, inferred, spec)).result()
        if clock is not None:
            clock.add(seconds)
        return result  # type: ignore[no-any-return]

    def pids(self) -> list[int]:
        """The running host processes' pids (``bench/ai_host.py`` sums their memory)."""
        return [pid for pid in (lane.pid for lane in self._lanes) if pid is not None]

    def close(self) -> None:
        """End every host process."""
        for lane in self._lanes:
            with lane._sending:
                lane.stop()


_shared: dict[tuple[int, int], HostProcesses] = {}
_shared_lock = threading.Lock()


def host_processes(count: int) -> HostProcesses:
    """This process's ``count`` host processes (started on first use, after a worker's fork;
    a forked child never uses its parent's)."""
    key = (os.getpid(), count)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = HostProcesses(count)
        return _shared[key]


# --- the host process's side ------------------------------------------------------------------
def _serve(receive: Connection, send: Connection) -> None:
    from modomo.inference.clock import StageClock
    from modomo.inference.host import single_threaded_libraries
    from modomo.inference.pipeline import reduced_view
    from modomo.inference.scene import finish_scene

    single_threaded_libraries()
    held: dict[tuple[int, int], LoadedImage] = {}
    session = 0
    try:
        send.send(("ready", os.getpid()))
    except OSError:  # the worker ended while this process was starting
        return
    while True:
        try:
            request = receive.recv()
        except (EOFError, OSError):  # the worker ended: so does this process
            return
        clock = StageClock()
        try:
            if request[0] == "load":
                _, token, data, max_pixels, input_side = request
                if token[0] > session:
                    session = token[0]
                    held = {k: v for k, v in held.items() if k[0] >= session}
                image = (
                    data
                    if isinstance(data, LoadedImage)
                    else _decode(data, max_pixels, input_side, clock)
                )
                with clock.measure("prepare"):
                    view = reduced_view(image.rgb, input_side)
                held[token] = image
                reply: Any = (image.size, view, clock.seconds, os.getpid())
            else:
                _, token, inferred, spec = request
                kept = held.pop(token, None)
                if kept is None:
                    raise HostProcessError("the host process no longer holds the scene")
                result = finish_scene(
                    kept,
                    inferred,
                    spec.stages,
                    spec.model_labels,
                    palette_size=spec.palette_size,
                    sample_pixels=spec.sample_pixels,
                    clock=clock,
                )
                reply = (result, clock.seconds)
            message: tuple[str, Any] = ("ok", reply)
        except Exception as exc:
            message = ("error", _portable(exc))
        try:
            send.send(message)
        except (BrokenPipeError, OSError):
            return


def _decode(data: bytes, max_pixels: int, input_side: int, clock: Any) -> LoadedImage:
    from modomo.images import load_image
    from modomo.inference.pipeline import DEPTH_SHORT_SIDE

    with clock.measure("decode"):
        return load_image(data, max_pixels=max_pixels, reduced=(input_side, DEPTH_SHORT_SIDE))


def _portable(exc: Exception) -> Exception:
    """The exception itself when it pickles and unpickles (its type and stage note kept),
    else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        stand_in = RuntimeError(f"{type(exc).__name__}: {exc}")
        for note in getattr(exc, "__notes__", ()):
            stand_in.add_note(note)
        return stand_in


def _main() -> None:
    # a Ctrl-C at the worker's terminal reaches its whole process group: this process ends
    # when the worker does (its pipe closes), not with a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    receive = Connection(int(sys.argv[1]), writable=False)
    send = Connection(int(sys.argv[2]), readable=False)
    started = time.monotonic()
    try:
        _serve(receive, send)
    finally:
        log.debug("host process %d ends after %.0f s", os.getpid(), time.monotonic() - started)
