"""Run ``python -m osteobmd run ...`` in a background process (Qt-free).

The panel starts Slicer's own Python (``PythonSlicer``) on the package's command line, so
Slicer stays responsive; tests start ``sys.executable``. Two threads read the process's
stderr and stdout into a queue; ``poll()`` (called from a GUI timer, or a loop) drains it
and returns the progress. Progress lines follow ``osteobmd.progress`` (one JSON object per
line on stderr); every other line is kept as log, and the last one is the error message
when the command fails (the CLI prints a one-line message and exits 2 or 3).

``cancel()`` ends the whole process tree (a launcher such as PythonSlicer starts the real
interpreter as a child): the process runs in its own process group / session, which is
terminated, then killed if it does not stop.
"""

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from osteobmd.progress import parse_progress_line

if TYPE_CHECKING:  # imported on use: parsing options needs the packages the panel installs first
    from osteobmd.options import RunOptions

# The states of a background process (the one definition; the session's outcomes build on them).
IDLE = "idle"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"

# Exit codes of `osteobmd run` (see osteobmd.errors).
EXIT_OK = 0
EXIT_INPUT = 2
EXIT_NO_VALID = 3
EXIT_CANCELLED = 130


@dataclass
class WorkerStatus:
    state: str = IDLE
    fraction: float = 0.0
    stage: str = ""
    message: str = ""
    returncode: Optional[int] = None
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def done(self) -> bool:
        return self.state in (FINISHED, FAILED, CANCELLED)


def package_dir() -> str:
    """The folder that holds the ``osteobmd`` package (put on the worker's PYTHONPATH)."""
    import osteobmd

    return str(Path(osteobmd.__file__).resolve().parent.parent)


def pipeline_command(python_executable: str, ct_path: str, out_dir: str, options: "RunOptions") -> List[str]:
    """The command line of one pipeline run with JSON-lines progress on stderr; the run's
    choices are ``options.to_argv()``, the one translation of options into arguments."""
    return [str(python_executable), "-m", "osteobmd", "run", str(ct_path), "--out", str(out_dir),
            "--progress", "json", *options.to_argv()]


def pipeline_environment(base: Optional[Dict[str, str]] = None, pythonpath: Optional[str] = None,
                         device: str = "auto") -> Dict[str, str]:
    """Environment for the worker: the package on PYTHONPATH, unbuffered output."""
    env = dict(os.environ if base is None else base)
    path = pythonpath or package_dir()
    env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


class BackgroundProcess:
    """One command in a background process with progress read from its stderr."""

    def __init__(self, command: Sequence[str], env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                 log_lines: int = 500):
        self.command = [str(c) for c in command]
        self.env = env
        self.cwd = cwd
        self.proc: Optional[subprocess.Popen] = None
        self.status = WorkerStatus()
        self.log = collections.deque(maxlen=log_lines)
        self._queue: "queue.Queue" = queue.Queue()
        self._threads: List[threading.Thread] = []
        self._cancelled = False
        self._last_text_line = ""

    # ---------------------------------------------------------------- start

    def start(self) -> "BackgroundProcess":
        if self.proc is not None:
            raise RuntimeError("This process was started already.")
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group: cancel reaches the children
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs,
        )
        self.status = WorkerStatus(state=RUNNING, message="Starting")
        for stream, name in ((self.proc.stderr, "stderr"), (self.proc.stdout, "stdout")):
            thread = threading.Thread(target=self._read, args=(stream, name), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, stream, name: str) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._queue.put((name, line.rstrip("\r\n")))
        except (OSError, ValueError):
            pass
        finally:
            try:
                stream.close()
            except OSError:
                pass

    # ---------------------------------------------------------------- poll

    def _drain(self) -> None:
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                return
            record = parse_progress_line(line) if name == "stderr" else None
            if record is not None:
                try:
                    self.status.fraction = max(0.0, min(1.0, float(record.get("fraction", 0.0))))
                except (TypeError, ValueError):
                    pass
                self.status.stage = str(record.get("stage", ""))
                self.status.message = str(record.get("message", ""))
            else:
                self.log.append(line)
                if line.strip() and name == "stderr":
                    self._last_text_line = line.strip()

    def poll(self) -> WorkerStatus:
        """Read what the process printed so far; returns the status (non-blocking)."""
        if self.proc is None:
            return self.status
        self._drain()
        if self.status.done:
            return self.status
        code = self.proc.poll()
        if code is None:
            return self.status
        for thread in self._threads:  # the process ended: collect its last lines
            thread.join(timeout=2.0)
        self._drain()
        self.status.returncode = code
        if self._cancelled:
            self.status.state = CANCELLED
            self.status.message = "Cancelled"
        elif code == EXIT_OK:
            self.status.state = FINISHED
            self.status.fraction = 1.0
        else:
            self.status.state = FAILED
            self.status.error = self._error_text(code)
        return self.status

    def _error_text(self, code: int) -> str:
        if self._last_text_line and not self._last_text_line.startswith("Traceback"):
            return self._last_text_line
        return f"The processing stopped with exit code {code}. See the log for details."

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> WorkerStatus:
        """Block until the process ends (tests, scripts); returns the final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.poll()
            if status.done or self.proc is None:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"The process did not finish within {timeout} s.")
            time.sleep(interval)

    # ---------------------------------------------------------------- cancel

    def cancel(self, grace_seconds: float = 3.0) -> WorkerStatus:
        """End the process and all its children; returns the final status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.poll()
        self._cancelled = True
        self._terminate_tree(force=False)
        try:
            self.proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        self._terminate_tree(force=True)  # also reaches children that outlived the parent
        try:
            self.proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        return self.poll()

    def _terminate_tree(self, force: bool) -> None:
        pid = self.proc.pid
        try:
            import psutil  # Slicer ships it; optional elsewhere

            try:
                children = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                try:
                    child.kill() if force else child.terminate()
                except psutil.Error:
                    pass
        except ImportError:
            pass
        if sys.platform == "win32":
            if force:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True)
            else:
                try:
                    self.proc.terminate()
                except OSError:
                    pass
            return
        try:
            os.killpg(pid, signal.SIGKILL if force else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


class PipelineWorker(BackgroundProcess):
    """``osteobmd run`` on one CT, with the output folder it writes."""

    def __init__(self, python_executable: str, ct_path: str, out_dir: str, options: "RunOptions",
                 pythonpath: Optional[str] = None, env: Optional[Dict[str, str]] = None):
        command = pipeline_command(python_executable, ct_path, out_dir, options)
        super().__init__(command, env=pipeline_environment(env, pythonpath, options.device))
        self.options = options
        self.ct_path = str(ct_path)
        self.out_dir = str(out_dir)
        self.mask_path = None if options.mask_path is None else str(options.mask_path)

    @property
    def has_results(self) -> bool:
        """True when the run left a results.json (also on exit 3, no valid measurement)."""
        from osteobmd.results import RESULTS_JSON

        return (Path(self.out_dir) / RESULTS_JSON).exists()
