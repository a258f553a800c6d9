"""What the benchmark scripts share: their command lines, the interleaved rounds and their
summaries, the processes they start and what is read of them, progress on stderr, and plots.

Theory of operation: every script is run as ``python benchmarks/X.py``, so this directory is
first on ``sys.path``; a script imports this module and the other ``_*`` helper modules, never
another script. A helper module that runs as a process of its own
(``python benchmarks/_wsload.py ...``) may import it too: it imports only the standard library
and attrs, and matplotlib only when a figure is drawn.

- Command line: :class:`Options`, an ``argparse`` parser with ``--quick`` and flags whose
  default depends on it (an explicit value always wins).
- Rounds: :func:`interleaved_rounds` runs each contender once per round, in turn, so that a
  noisy minute on this shared machine hits them all alike; :class:`Spread`,
  :func:`paired_ratio`, :func:`median_of` and :func:`percentile` summarize what they gave,
  :func:`best_of` times a micro-benchmark.
- The machine (``_machine.py``, re-exported here): :class:`Processes` starts the subprocesses
  of one run (each pinned to a CPU when there are two, its open-file limit raised, its output
  in a log file) and kills them all at the end; :class:`CpuMarks` samples their CPU time from
  ``/proc`` at the bounds of a timed window; :func:`start_redis` starts a ``redis-server`` of
  the benchmark's own; :func:`free_port`; :class:`Machine` for the CPU count and load
  average; :func:`note` and :func:`progress` on stderr (the table goes to stdout).
- Plots: :func:`pyplot`, :func:`bars`, :func:`cdf`, :func:`log_ms_axis` and
  :func:`save_figure` for the PNGs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import attrs
from _machine import HOST as HOST
from _machine import START_TIMEOUT as START_TIMEOUT
from _machine import WAITING as WAITING
from _machine import CpuMarks as CpuMarks
from _machine import Machine as Machine
from _machine import Processes as Processes
from _machine import accepts as accepts
from _machine import child_setup as child_setup
from _machine import clear_progress as clear_progress
from _machine import cpu_times as cpu_times
from _machine import free_port as free_port
from _machine import note as note
from _machine import peak_kib as peak_kib
from _machine import pin as pin
from _machine import processes as processes
from _machine import progress as progress
from _machine import raise_nofile as raise_nofile
from _machine import read_line as read_line
from _machine import redis_server as redis_server
from _machine import start_redis as start_redis
from _machine import tell as tell
from _machine import two_cpus as two_cpus
from _machine import vm_kib as vm_kib
from _machine import wait_for as wait_for

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # where a figure goes by default (not committed)
IMAGES = HERE.parent / "docs" / "images"  # the committed figures of the docs
NAN2 = (math.nan, math.nan)

T = TypeVar("T")


# ---------------------------------------------------------------------- command line


def _shown(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


class Options:
    """A script's command line: ``--quick``, and the flags whose default depends on it.

    A flag added with :meth:`add_mode` defaults to ``None`` and :meth:`parse` fills it with
    its full or quick value, so that an explicit value wins over both.

    Args:
        doc: The script's docstring; its first paragraph describes the script.
        quick: The help of ``--quick``: what the smoke run does.
    """

    def __init__(self, doc: str | None, *, quick: str) -> None:
        self.parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
        self.parser.add_argument("--quick", action="store_true", help=quick)
        self._modes: dict[str, tuple[object, object]] = {}  # dest -> (full, quick)
        self._contenders: tuple[str, list[str], str] | None = None  # dest, known, what
        self._checks: list[Callable[[argparse.Namespace], object]] = []

    def add(self, *flags: str, **kwargs: Any) -> None:
        """A flag as ``ArgumentParser.add_argument`` takes it."""
        self.parser.add_argument(*flags, **kwargs)

    def add_mode(
        self, flag: str, *, full: object, quick: object, help: str, type: type = float
    ) -> None:
        """A flag whose default is *full*, or *quick* with ``--quick``."""
        dest = flag.lstrip("-").replace("-", "_")
        self._modes[dest] = (full, quick)
        default = f"default {_shown(full)}" + (
            "" if full == quick else f"; --quick {_shown(quick)}"
        )
        self.parser.add_argument(flag, type=type, default=None, help=f"{help} ({default})")

    def add_window(
        self,
        *,
        duration: tuple[float, float] = (10.0, 2.0),
        warmup: tuple[float, float] = (2.0, 0.5),
        rounds: tuple[int, int] = (3, 1),
        least: int = 1,
    ) -> None:
        """``--duration`` and ``--warmup`` (seconds, full and quick; positive and not
        negative), and ``--rounds`` (:meth:`add_rounds`)."""
        full, quick = duration
        self.add_mode("--duration", full=full, quick=quick, help="timed seconds per run")
        full, quick = warmup
        self.add_mode("--warmup", full=full, quick=quick, help="seconds before timing")
        self.add_rounds(*rounds, least=least)

        def check(args: argparse.Namespace) -> None:
            if args.duration <= 0 or args.warmup < 0:
                self.error("--duration must be positive, --warmup >= 0")

        self.validate(check)

    def add_rounds(self, full: int, quick: int, *, least: int = 1) -> None:
        """``--rounds``: interleaved rounds, at least *least* (0: the rounds may be skipped)."""
        help = "interleaved rounds per contender" + (" (0: none)" if least == 0 else "")
        self.add_mode("--rounds", full=full, quick=quick, help=help, type=int)

        def check(args: argparse.Namespace) -> None:
            if args.rounds < least:
                self.error(f"--rounds must be at least {least}")

        self.validate(check)

    def add_contenders(
        self,
        known: Iterable[str],
        default: str | None,
        *,
        flag: str = "--contenders",
        what: str = "contender",
        help: str | None = None,
    ) -> None:
        """*flag*: comma-separated names of *known*; :meth:`parse` sets ``args.kinds`` to
        the list (``None`` if the flag and *default* are)."""
        known = list(known)
        help = help or f"comma-separated, from: {', '.join(known)} (default {default})"
        self.parser.add_argument(flag, default=default, help=help)
        self._contenders = (flag.lstrip("-").replace("-", "_"), known, what)

    def validate(self, check: Callable[[argparse.Namespace], object]) -> None:
        """Have :meth:`parse` call ``check(args)`` once the defaults are filled in (it may
        call :meth:`error`)."""
        self._checks.append(check)

    def add_plot(self, default: Path) -> None:
        """``--plot PATH``: where the PNG goes."""
        self.add("--plot", type=Path, default=default, help=f"the PNG to write (default {default})")

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """The arguments, each flag of :meth:`add_mode` filled in for the mode, ``kinds`` set
        by :meth:`add_contenders`, and every check of :meth:`validate` passed."""
        args = self.parser.parse_args(argv)
        for dest, (full, quick) in self._modes.items():
            if getattr(args, dest) is None:
                setattr(args, dest, quick if args.quick else full)
        if self._contenders is not None:
            dest, known, what = self._contenders
            text = getattr(args, dest)
            args.kinds = None if text is None else self._choose(text, known, what)
        for check in self._checks:
            check(args)
        return args

    def error(self, message: str) -> NoReturn:
        self.parser.error(message)

    def _choose(self, text: str, known: list[str], what: str) -> list[str]:
        """The comma-separated names of *text*, each one of *known* (else a usage error)."""
        names = [name for name in text.split(",") if name]
        for name in names:
            if name not in known:
                self.error(f"unknown {what} {name!r}: choose from {', '.join(known)}")
        return names


# ---------------------------------------------------------------------- rounds


def interleaved_rounds(
    kinds: Sequence[str],
    rounds: int,
    run: Callable[[str, str], T],
    show: Callable[[T], str],
) -> dict[str, list[T]]:
    """``run(kind, label)`` for each of *kinds* once per round, the kinds taking turns, for
    *rounds* rounds; a line on stderr after each (``show(result)``). Each kind's results."""
    results: dict[str, list[T]] = {kind: [] for kind in kinds}
    width = max((len(kind) for kind in kinds), default=0)
    for number in range(1, rounds + 1):
        for kind in kinds:
            result = run(kind, f"{kind} {number}/{rounds}")
            results[kind].append(result)
            note(f"round {number}/{rounds}  {kind:{width}s}  {show(result)}")
    return results


@attrs.frozen
class Spread:
    """The median of some values, and their least and greatest."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(values), min(values), max(values))


def median_of(items: Iterable[T], value: Callable[[T], float]) -> float:
    """The median of *value* over *items*, NaNs left out (NaN if nothing is left)."""
    return Spread.of(value(item) for item in items).median


def paired_ratio(
    results: Mapping[str, Sequence[T]], kind: str, other: str, value: Callable[[T], float]
) -> float:
    """The median over rounds of *kind*'s *value* over *other*'s in the same round (the pairs
    measured close in time, the noise of the machine cancels best); NaN if one is missing."""
    if kind not in results or other not in results:
        return math.nan
    pairs = zip(results[kind], results[other], strict=True)
    return median_of(pairs, lambda pair: _ratio(value(pair[0]), value(pair[1])))


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


class Sampled(Protocol):
    """A run with the CPU shares of its processes (:meth:`CpuMarks.shares`)."""

    @property
    def cpu(self) -> Mapping[str, tuple[float, float]]: ...


def cpu_share(runs: Iterable[Sampled], name: str) -> tuple[float, float]:
    """The median over *runs* of the % of the window *name* ran on a CPU, and waited for one."""
    runs = list(runs)
    ran = median_of(runs, lambda r: r.cpu.get(name, NAN2)[0])
    return ran, median_of(runs, lambda r: r.cpu.get(name, NAN2)[1])


def percentile(ordered: Sequence[float], q: float) -> float:
    """The *q* quantile of the sorted *ordered* (NaN if empty)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The fewest seconds of *repeat* calls of *run*."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# ---------------------------------------------------------------------- plots


def pyplot() -> Any:
    """``matplotlib.pyplot``, drawing to files (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colors(kinds: Iterable[str]) -> dict[str, str]:
    """A colour of matplotlib's cycle for each of *kinds*, in order."""
    cycle = pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    return {kind: cycle[i % len(cycle)] for i, kind in enumerate(kinds)}


def bars(
    ax: Any,
    labels: Sequence[str],
    values: Sequence[Sequence[float]],
    texts: Sequence[str],
    *,
    color: str | Sequence[str] = "#4c72b0",
    room: float = 1.45,
    fontsize: float | None = None,
) -> None:
    """Horizontal bars, the first at the top: each the median of its *values*, with a line
    from their least to their greatest (if they differ), and its text beyond its end; the
    axis leaves *room* times the longest for the texts (in *fontsize*, if given)."""
    spreads = [Spread.of(v) for v in values]
    medians = [s.median for s in spreads]
    spread = [[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]]
    xerr = spread if any(map(any, spread)) else None
    drawn = ax.barh(labels, medians, xerr=xerr, color=color)
    for bar, s, text in zip(drawn, spreads, texts, strict=True):
        y = bar.get_y() + bar.get_height() / 2
        ax.text(s.high * 1.02, y, text, va="center", fontsize=fontsize)
    ax.invert_yaxis()
    finite = [s.high for s in spreads if math.isfinite(s.high)]
    ax.set_xlim(0, max([*finite, 0.0]) * room or 1)


def cdf(ax: Any, values: Iterable[float], **kwargs: Any) -> None:
    """The cumulative distribution of *values* (at most a few thousand points: they draw the
    same curve); nothing if there are none."""
    ordered = sorted(values)
    if not ordered:
        return
    n = len(ordered)
    step = max(1, n // 2000)
    xs = [*ordered[::step], ordered[-1]]
    ys = [*(i / n for i in range(0, n, step)), 1.0]
    ax.plot(xs, ys, **kwargs)


def log_ms_axis(ax: Any, label: str, what: str = "round trips") -> None:
    """A log x axis of milliseconds, ticks at 1, 2 and 5 of each decade, and a y axis of
    fractions of *what* for a :func:`cdf`."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)
    ax.set_ylabel(f"fraction of {what}")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def save_figure(fig: Any, path: Path) -> None:
    """Lay out *fig*, write it to *path* (its folder made if need be) and say so."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot written to {path}")
