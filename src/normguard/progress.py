"""Progress bars for the long-running commands and science functions, on stderr.

:func:`progress` returns a bar that draws with ``tqdm`` when it is installed and with a
one-line built-in bar otherwise (tqdm is not a dependency of normguard). A bar is drawn
only when it is wanted: ``enabled=True`` draws it, ``False`` never does, and ``None`` (the
default everywhere) draws it when stderr is a terminal or the code runs in a Jupyter
notebook, so logs, pipes, CI and tests stay clean. The environment variable
``NORMGUARD_PROGRESS`` overrides that default: ``0`` turns every bar off (even
``enabled=True``), ``1`` turns on the bars left to the default.

Example:
    >>> import io
    >>> with progress(3, "fits", unit="fit", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update()
    >>> bar.n, bar.enabled
    (3, False)
    >>> class Terminal(io.StringIO):
    ...     def isatty(self) -> bool:
    ...         return True
    >>> screen = Terminal()
    >>> bar = progress(4, "fits", unit="fit", file=screen, use_tqdm=False, min_interval=0.0)
    >>> bar.update(2)
    >>> screen.getvalue().split("\\r")[-1].split(" [")[0]
    'fits:  50% 2/4 fits'
    >>> bar.close()
    >>> screen.getvalue().endswith("\\r")  # the line is wiped when the bar closes
    True
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from types import TracebackType
from typing import IO, Any

from normguard.validation import check_bool

__all__ = ["Progress", "progress", "progress_enabled"]


def progress_enabled(enabled: bool | None, file: IO[str] | None = None) -> bool:
    """Whether a bar is drawn: ``enabled`` if given, else whether ``file`` (stderr) is a terminal
    or a Jupyter notebook runs the code.

    ``NORMGUARD_PROGRESS=0`` in the environment turns bars off whatever ``enabled`` says;
    ``NORMGUARD_PROGRESS=1`` turns them on where ``enabled`` is ``None``.

    Example:
        >>> import io
        >>> progress_enabled(None, io.StringIO()), progress_enabled(False), progress_enabled(True, io.StringIO())
        (False, False, True)
    """
    if enabled is not None:
        check_bool("progress", enabled)
    switch = os.environ.get("NORMGUARD_PROGRESS", "").strip()
    if switch == "0":
        return False
    if enabled is not None:
        return bool(enabled)
    if switch == "1" or _in_notebook():
        return True
    stream = sys.stderr if file is None else file
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def _in_notebook() -> bool:
    """Whether a Jupyter kernel runs this code (its stderr is no terminal, yet shows a bar)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _duration(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a bar's elapsed time and estimate.

    Example:
        >>> _duration(5.2), _duration(125), _duration(3725), _duration(float("nan"))
        ('0:05', '2:05', '1:02:05', '?')
    """
    if not math.isfinite(seconds):
        return "?"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A progress bar: ``update(n)``, ``set_description(text)``, ``close()``; a context manager.

    Use :func:`progress` to make one. A disabled bar only counts (``n``) and draws nothing.
    With ``tick`` seconds given, a background thread redraws the bar that often, so the
    elapsed time moves during one long call that reports no progress of its own.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "step",
        enabled: bool | None = None,
        file: IO[str] | None = None,
        use_tqdm: bool | None = None,
        min_interval: float = 0.1,
        tick: float | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.file: IO[str] = sys.stderr if file is None else file
        self.enabled = progress_enabled(enabled, self.file)
        self.min_interval = min_interval
        self._start = time.monotonic()
        self._last_draw = -math.inf
        self._width = 0
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._tqdm: Any = None
        if self.enabled and use_tqdm is not False:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if use_tqdm:
                    raise
            else:
                # without a total: the label and the elapsed time (a count of nothing says nothing)
                fmt = None if total is not None else "{desc} [{elapsed} elapsed]"
                self._tqdm = tqdm(
                    total=total,
                    desc=desc,
                    unit=unit,
                    file=self.file,
                    leave=False,
                    dynamic_ncols=True,
                    bar_format=fmt,
                    mininterval=min_interval,
                )
        if self.enabled and tick is not None:
            self._ticker = threading.Thread(target=self._tick, args=(float(tick),), name="normguard-progress")
            self._ticker.daemon = True
            self._ticker.start()

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._refresh()

    def _refresh(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._tqdm is not None:
                self._tqdm.refresh()
            else:
                self._draw(time.monotonic())

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done (and redraw, at most every ``min_interval`` seconds)."""
        self.n += n
        if not self.enabled or self._closed:
            return
        with self._lock:
            if self._tqdm is not None:
                self._tqdm.update(n)
                return
            now = time.monotonic()
            if now - self._last_draw >= self.min_interval or (self.total is not None and self.n >= self.total):
                self._last_draw = now
                self._draw(now)

    def set_description(self, desc: str) -> None:
        """Change the label in front of the bar."""
        self.desc = desc
        if not self.enabled or self._closed:
            return
        with self._lock:
            if self._tqdm is not None:
                self._tqdm.set_description(desc)
            else:
                self._draw(time.monotonic())

    def _draw(self, now: float) -> None:
        elapsed = now - self._start
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        if self.total:
            done = min(self.n / self.total, 1.0)
            rate = self.n / elapsed if elapsed > 0 else 0.0
            left = (self.total - self.n) / rate if rate > 0 else math.nan
            line = (
                f"{self.desc}: {done:4.0%} {self.n}/{self.total} {units} "
                f"[{_duration(elapsed)} elapsed, {_duration(left)} left]"
            )
        else:
            line = f"{self.desc} [{_duration(elapsed)} elapsed]"
        pad = " " * max(self._width - len(line), 0)
        self._width = len(line)
        self.file.write("\r" + line + pad)
        self.file.flush()

    def close(self) -> None:
        """Remove the bar from the terminal (the command's own output follows on a clean line)."""
        if self._closed:
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._closed = True
            if not self.enabled:
                return
            if self._tqdm is not None:
                self._tqdm.close()
            elif self._width:
                self.file.write("\r" + " " * self._width + "\r")
                self.file.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def progress(
    total: int | None,
    desc: str,
    *,
    unit: str = "step",
    enabled: bool | None = None,
    file: IO[str] | None = None,
    use_tqdm: bool | None = None,
    min_interval: float = 0.1,
    tick: float | None = None,
) -> Progress:
    """A progress bar on stderr (see the module's docstring for when it is drawn).

    Args:
        total: units to do; ``None`` when unknown (the bar then shows its label and the time).
        desc: the label in front of the bar.
        unit: what one ``update()`` counts (``"step"``, ``"fit"``, ``"run"``).
        enabled: ``True`` draw, ``False`` never, ``None`` only when ``file`` is a terminal.
        file: where to draw (default ``sys.stderr``).
        use_tqdm: ``None`` tqdm if installed else the built-in bar; ``False`` always the
            built-in bar; ``True`` tqdm (``ImportError`` without it).
        min_interval: seconds between two redraws (tqdm's ``mininterval``).
        tick: if given, redraw every ``tick`` seconds from a background thread (for a long
            step that reports nothing itself: the elapsed time keeps moving).
    """
    return Progress(
        total, desc, unit=unit, enabled=enabled, file=file, use_tqdm=use_tqdm, min_interval=min_interval, tick=tick
    )
