"""The machine a benchmark runs on: its CPUs (processes pinned when there are two), loopback
ports, what ``/proc`` says of a process (memory, CPU time), the subprocesses of a run, a
``redis-server`` of the benchmark's own, and progress on stderr. Re-exported by ``_common``,
which the scripts import it from.

Theory of operation: a run starts its processes through :class:`Processes` (each pinned to a
CPU with two CPUs, its open-file limit raised, its output in a log file of its name), talks to
them through their stdin and stdout (:func:`read_line`, :func:`tell`), and kills them all when
it ends (:func:`processes`). :class:`CpuMarks` reads their CPU time at named moments, so that
the share of a timed window each spent on a CPU, and waiting for one, can be told: on this
shared machine the second says whether a figure is limited by the work or by the neighbours.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds for a broker, backend or server to be ready

T = TypeVar("T")


# ---------------------------------------------------------------------- the machine


def two_cpus() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def pin(cpu: int | None) -> None:
    """Pin this process to *cpu* when there are two CPUs (else leave it floating)."""
    if cpu is not None and two_cpus():
        os.sched_setaffinity(0, {cpu})


def raise_nofile(needed: int, *, clamp: bool = False) -> None:
    """Raise this process's open-file limit to at least *needed*; past the hard limit, fail
    (or stop at the hard limit with *clamp*)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        if not clamp:
            raise SystemExit(f"need {needed} open files, the hard limit is {hard} (ulimit -Hn)")
        needed = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def child_setup(cpu: int | None, nofile: int = 0) -> Callable[[], None]:
    """A ``preexec_fn``: pin the child to *cpu* (with two CPUs) and raise its open-file limit
    to *nofile* (up to the hard limit)."""

    def preexec() -> None:
        pin(cpu)
        if nofile:
            raise_nofile(nofile, clamp=True)

    return preexec


#: What :class:`Machine` may add to its line, for a table with the time spent waiting for a CPU.
WAITING = " (a busy machine shows in the 'waiting' figures)"


class Machine:
    """The machine a run is on: made at the start of the run (it says on stderr if there is
    one CPU, so that nothing is pinned, and notes the 1-minute load average), :meth:`report`
    at the end.

    Args:
        pinning: What the run pins where (``", the broker pinned to CPU 0"``), said with two
            CPUs.
        remark: The end of the line (:data:`WAITING`, say).
    """

    def __init__(self, pinning: str = "", remark: str = "") -> None:
        pinned = two_cpus()
        if not pinned:
            note("one CPU: processes are not pinned")
        self.pinning, self.remark = pinning if pinned else "", remark
        self.load_before = os.getloadavg()[0]

    def report(self) -> None:
        """Print ``N CPU(s)<pinning>; 1-minute load average X before, Y after<remark>``."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(
            f"\n{cpus} CPU(s){self.pinning}; 1-minute load average {self.load_before:.2f} "
            f"before, {os.getloadavg()[0]:.2f} after{self.remark}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts connections on loopback *port*."""
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def vm_kib(pid: int, field: str = "VmRSS") -> int:
    """*field* of ``/proc/PID/status``, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def peak_kib(pid: int) -> float:
    """The peak resident memory (``VmHWM``) of *pid*, KiB; NaN if it is gone."""
    try:
        return float(vm_kib(pid, "VmHWM"))
    except (OSError, RuntimeError):
        return math.nan


def cpu_times(pid: int) -> tuple[float, float]:
    """Seconds process *pid* has spent on a CPU, and runnable but waiting for one (its
    threads' ``schedstat``: on this shared machine the second one says whether a figure is
    limited by the work or by the neighbours)."""
    running = waiting = 0.0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            on_cpu, queued, _ = (task / "schedstat").read_text().split()
            running += int(on_cpu) / 1e9
            waiting += int(queued) / 1e9
    except (OSError, ValueError):  # no schedstat: CPU time from stat, waiting unknown
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), math.nan
    return running, waiting


class CpuMarks:
    """The CPU times of some processes, read at named moments (:meth:`mark`); :meth:`shares`
    turns two marks into the share of the time between them that each process spent on a CPU
    and waiting for one.

    Args:
        pids: Process name to pid; :meth:`watch` adds one later.
    """

    def __init__(self, pids: Mapping[str, int] | None = None) -> None:
        self.pids = dict(pids or {})
        self._marks: dict[str, tuple[float, dict[str, tuple[float, float]]]] = {}

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def mark(self, moment: str) -> None:
        times = {name: cpu_times(pid) for name, pid in self.pids.items()}
        self._marks[moment] = (time.monotonic(), times)

    def shares(self, start: str = "start", end: str = "end") -> dict[str, tuple[float, float]]:
        """Process name -> % of the time from *start* to *end* it ran on a CPU, and waited for
        one (the processes watched at both; none if a mark is missing)."""
        if start not in self._marks or end not in self._marks:
            return {}
        (t0, before), (t1, after) = self._marks[start], self._marks[end]
        elapsed = t1 - t0
        return {
            name: (
                100 * (ran - before[name][0]) / elapsed,
                100 * (wait - before[name][1]) / elapsed,
            )
            for name, (ran, wait) in after.items()
            if name in before
        }


# ---------------------------------------------------------------------- processes

#: The lines of a log that look like a warning or an error.
COMPLAINT = ("WARNING", "ERROR", "Traceback", "panic")


class Processes:
    """The subprocesses of one run, each logging to a file of its name in :attr:`dir`; all
    killed by :meth:`close` (see :func:`processes`)."""

    def __init__(self, prefix: str = "bench-") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix=prefix)
        self.dir = Path(self._dir.name)
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._services: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        cpu: int | None,
        nofile: int = 0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout: int | None = None,
        stdin: int | None = subprocess.DEVNULL,
        service: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start *command* as *name* (in *cwd* if given), pinned to *cpu* with two CPUs, its
        open-file limit raised to *nofile*. Its output goes to its log, or with *stdout* there
        and its stderr (a progress line) to ours. A *service* (a broker, backend or server) is
        expected to run until killed: :meth:`check_alive` fails if it has exited."""
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        with log:
            proc = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=log if stdout is None else stdout,
                stderr=log if stdout is None else None,
                env=env,
                cwd=cwd,
                preexec_fn=child_setup(cpu, nofile),
            )
        self._procs.append((name, proc))
        if service:
            self._services.append((name, proc))
        return proc

    def pids(self) -> dict[str, int]:
        """Name -> pid of every process started."""
        return {name: proc.pid for name, proc in self._procs}

    def log(self, name: str, lines: int = 15) -> str:
        """The last *lines* of *name*'s log, indented and prefixed with its name."""
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        tail = path.read_bytes().decode(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {name}| {line}" for line in tail)

    def complaints(self, name: str) -> list[str]:
        """The lines of *name*'s log that look like warnings or errors."""
        path = self.dir / f"{name}.log"
        if not path.exists():
            return []
        text = path.read_bytes().decode(errors="replace")
        return [line for line in text.splitlines() if any(word in line for word in COMPLAINT)]

    def report_complaints(self, *names: str) -> None:
        """Say on stderr how many warnings each process logged, and the first ones."""
        for name in names:
            lines = self.complaints(name)
            if lines:
                note(f"  {name} logged {len(lines)} warning(s)/error(s):")
                for line in lines[:3]:
                    note(f"    {line[:160]}")

    def check_alive(self) -> None:
        for name, proc in self._services:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.log(name)}")

    def close(self) -> None:
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.kill()
        for _, proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._dir.cleanup()


@contextlib.contextmanager
def processes(prefix: str = "bench-") -> Iterator[Processes]:
    """A :class:`Processes` whose processes are all killed on exit."""
    procs = Processes(prefix)
    try:
        yield procs
    finally:
        procs.close()


def wait_for(what: str, ready: Callable[[], T], procs: Processes, timeout: float) -> T:
    """Poll *ready* until it returns something truthy, and return that; fail after *timeout*
    seconds or as soon as one of the services of *procs* exits."""
    deadline = time.monotonic() + timeout
    while True:
        result = ready()
        if result:
            return result
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_line(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The next line *proc* writes on its stdout (``""`` at its end), waiting until
    *deadline* (``time.monotonic()``) at most."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        raise RuntimeError("timed out waiting for a subprocess")
    return proc.stdout.readline().decode()


def tell(proc: subprocess.Popen[bytes], line: str) -> None:
    """Write *line* and a newline to *proc*'s stdin."""
    assert proc.stdin is not None
    proc.stdin.write(f"{line}\n".encode())
    proc.stdin.flush()


# ---------------------------------------------------------------------- redis-server


def start_redis(procs: Processes, name: str = "redis") -> int:
    """Start a ``redis-server`` of the benchmark's own as *name* (loopback, a free port, no
    persistence, floating) and wait until it answers; its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    procs.start(name, command, cpu=None)

    def answers() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for("redis-server", answers, procs, START_TIMEOUT)
    return port


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A ``redis-server`` of the benchmark's own (:func:`start_redis`), stopped on exit; its
    port."""
    with processes("bench-redis-") as procs:
        yield start_redis(procs)


# ---------------------------------------------------------------------- stderr


def note(text: str, end: str = "\n") -> None:
    """A line of progress on stderr (stdout has the results)."""
    print(text, end=end, file=sys.stderr, flush=True)


def progress(text: str) -> None:
    """Overwrite the progress line on stderr with *text* (:func:`clear_progress` ends it)."""
    print(f"\r  {text}   ", end="", file=sys.stderr, flush=True)


def clear_progress() -> None:
    print("\r" + " " * 100 + "\r", end="", file=sys.stderr, flush=True)
