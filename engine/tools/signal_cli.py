"""``dreamstate map`` and ``dreamstate calibrate``: offline tools over a recording.

Both replay the recording through ``devices.replay.ReplayDevice`` (unpaced) into a
``SignalPipeline`` with the show's signal settings, so they see exactly the windows and
features a live show would.

* ``map RECORDING [--labels FILE | --annotations] --out map.png``: a batch t-SNE of every
  accepted window, coloured by label (legend) or by time (colour bar).
* ``calibrate RECORDING (--labels FILE | --annotations) --out calib.json``: fits the
  calibrated-state classifier on the labelled windows, prints the held-out accuracy and saves
  the calibration (JSON) for ``states.mode = "calibrated"``.

A labels file is CSV: ``onset,duration,label`` per line, seconds from the recording's first
sample (a header line and ``#`` comments are allowed).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamstate.engine.core.aio import wait_for
from dreamstate.engine.core.errors import CalibrationError, RecordingError

if TYPE_CHECKING:
    from dreamstate.engine.core.show import Show
    from dreamstate.engine.signal.pipeline import SignalPipeline, WindowResult

log = logging.getLogger("dreamstate.signal")

IGNORED_LABEL_PREFIXES = ("BAD", "bad", "EDGE", "edge")
"""Annotation labels that mark bad stretches, not states; never used as calibration labels."""


@dataclass(frozen=True, slots=True)
class LabelSpan:
    onset: float
    duration: float
    label: str


@dataclass
class Collected:
    """Every window of a recording as the pipeline saw it."""

    results: list[WindowResult] = field(default_factory=list)
    first_index: int = 0
    seconds: float = 0.0
    labels: list[str | None] = field(default_factory=list)
    pipeline: SignalPipeline | None = None
    markers: list[str] = field(default_factory=list)
    """Every marker label in the recording, in order (including ignored BAD_/EDGE_ ones)."""

    def no_labels_reason(self, spans: list[LabelSpan] | None, *, usable_windows: int) -> str:
        """Why no usable window got a label, in words a user can act on."""
        if spans is not None:
            last = max(s.onset + s.duration for s in spans)
            return (f"none of the {len(spans)} label spans covers a whole usable window (the spans reach "
                    f"{last:g} s; the recording lasts {self.seconds:.1f} s with {usable_windows} usable "
                    f"windows; onsets count from the recording's first sample)")
        if not self.markers:
            return "the recording has no annotations"
        kept = [m for m in self.markers if not m.startswith(IGNORED_LABEL_PREFIXES)]
        if not kept:
            names = sorted(set(self.markers))[:5]
            return (f"all {len(self.markers)} of its annotations mark bad or edge stretches "
                    f"({', '.join(names)}), which are never used as labels")
        return (f"its {len(kept)} state annotations ({', '.join(sorted(set(kept))[:5])}) do not fall "
                f"on any usable window (they may sit in rejected stretches)")


def read_labels(path: str | Path) -> list[LabelSpan]:
    """Parse a labels CSV (``onset,duration,label``); raise ``RecordingError`` naming the line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordingError(f"cannot read labels file {p}: {exc.strerror}",
                             hint="give --labels a CSV of onset,duration,label lines") from None
    spans: list[LabelSpan] = []
    for n, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [x.strip() for x in line.split(",")]
        if n == 1 and parts[0].lower() == "onset":
            continue
        try:
            if len(parts) != 3 or not parts[2]:
                raise ValueError("need 3 fields")
            onset, duration = float(parts[0]), float(parts[1])
            if onset < 0 or duration <= 0:
                raise ValueError("onset must be >= 0 and duration > 0")
        except ValueError as exc:
            raise RecordingError(f"labels file {p} line {n}: {line!r}: {exc}",
                                 hint="each line is onset_seconds,duration_seconds,label "
                                      "(e.g. 12.5,30,fun)") from None
        spans.append(LabelSpan(onset, duration, parts[2]))
    if not spans:
        raise RecordingError(f"labels file {p} holds no labels",
                             hint="add lines like 0,30,fun")
    return spans


def _label_from_file(spans: list[LabelSpan], start_s: float, end_s: float) -> str | None:
    for s in spans:
        if s.onset <= start_s and end_s <= s.onset + s.duration:
            return s.label
    return None


def collect(path: str | Path, show: Show, *, labels: list[LabelSpan] | None = None,
            annotations: bool = False, timeout_s: float = 600.0) -> Collected:
    """Replay ``path`` through a pipeline (no live map) and keep every window result. Progress
    (samples replayed of the total) goes to an ``engine.tools.progress.ProgressReporter``."""
    import asyncio

    from dreamstate.devices.replay import ReplayDevice
    from dreamstate.engine.core.records import Marker, RawChunk
    from dreamstate.engine.signal.pipeline import SignalPipeline
    from dreamstate.engine.tools.progress import ProgressReporter

    pipe = SignalPipeline(show.signal, show.map, show.states, live_map=False)
    out = Collected(pipeline=pipe)

    async def run(bar: ProgressReporter) -> None:
        dev = ReplayDevice(path, speed=0, chunk=512)
        async with dev:
            assert dev.plan is not None
            out.first_index = dev.plan.first_index
            out.seconds = dev.plan.n / pipe.sfreq
            async for reading in dev.readings():
                if isinstance(reading, RawChunk):
                    bar.update(reading.first_index + len(reading.samples) - out.first_index, dev.plan.n)
                if isinstance(reading, Marker) and reading.label:
                    out.markers.append(reading.label)
                if isinstance(reading, Marker) and (
                        not annotations or reading.label.startswith(IGNORED_LABEL_PREFIXES)):
                    continue
                out.results.extend(pipe.feed(reading))

    async def bounded() -> None:
        with ProgressReporter(f"replaying {Path(path).name} (samples)") as bar:
            await wait_for(run(bar), timeout_s)

    try:
        asyncio.run(bounded())
    except TimeoutError:
        raise RecordingError(f"replaying {path} took longer than {timeout_s:.0f} s",
                             hint="use a shorter recording") from None
    for r in out.results:
        if labels is not None:
            end_s = (r.window.end_sample + 1 - out.first_index) / pipe.sfreq
            out.labels.append(_label_from_file(labels, end_s - pipe.win / pipe.sfreq, end_s))
        else:
            out.labels.append(r.label if annotations else None)
    return out


def _load_show(path: str | None) -> Show:
    from dreamstate.engine.runtime.showfile import load_show

    return load_show(path, deep=False).show


# ---------------------------------------------------------------------------------------- map
def plot_map(coords: Any, colours: list[str | None] | None, times: Any, out: Path, *,
             title: str) -> Path:
    """Write the t-SNE scatter: categorical colours with a legend, or time with a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    try:
        if colours is not None and any(c is not None for c in colours):
            names = sorted({c for c in colours if c is not None})
            cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
            mask_none = [c is None for c in colours]
            if any(mask_none):
                pts = coords[mask_none]
                ax.scatter(pts[:, 0], pts[:, 1], s=10, c="#bbbbbb", alpha=0.5,
                           label=f"unlabelled ({len(pts)})", linewidths=0)
            for i, name in enumerate(names):
                sel = [c == name for c in colours]
                pts = coords[sel]
                ax.scatter(pts[:, 0], pts[:, 1], s=14, color=cmap(i % cmap.N), alpha=0.85,
                           label=f"{name} ({len(pts)})", linewidths=0)
            ax.legend(title="label (windows)", loc="best", fontsize=9, markerscale=1.5,
                      framealpha=0.85)
        else:
            sc = ax.scatter(coords[:, 0], coords[:, 1], s=12, c=times, cmap="viridis",
                            alpha=0.9, linewidths=0)
            fig.colorbar(sc, ax=ax, label="time in recording (s)")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.grid(True, alpha=0.2)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def cmd_map(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console

    from dreamstate.engine.signal.embedding import fit_layout

    show = _load_show(args.show)
    labels = read_labels(args.labels) if args.labels else None
    got = collect(args.recording, show, labels=labels, annotations=args.annotations)
    keep = [i for i, r in enumerate(got.results) if r.features is not None]
    rejected = len(got.results) - len(keep)
    if len(keep) < 10:
        raise RecordingError(f"{args.recording}: only {len(keep)} usable windows "
                             f"({rejected} rejected) - too few for a map",
                             hint="check the recording's signal quality (dreamstate monitor "
                                  "--replay) or use a longer recording")
    x = np.array([got.results[i].features.vector for i in keep], dtype=np.float64)  # type: ignore[union-attr]
    scale = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(scale > 1e-9, scale, 1.0)
    log.info("fitting the t-SNE map", extra={"windows": len(keep), "perplexity": args.perplexity})
    coords, _ = fit_layout(z, "tsne", perplexity=args.perplexity, seed=args.seed, n_jobs=args.jobs)
    times = np.array([(got.results[i].window.end_sample + 1 - got.first_index) / 512.0
                      for i in keep])
    colours = [got.labels[i] for i in keep] if (labels is not None or args.annotations) else None
    name = Path(args.recording).name
    how = "label"
    if colours is None:
        how = "time"
    elif not any(c is not None for c in colours):
        reason = got.no_labels_reason(labels, usable_windows=len(keep))
        log.warning("no usable labels; the map is coloured by time instead",
                    extra={"recording": str(args.recording), "why": reason,
                           "fix": "check the labels file's onsets, or the recording's annotations with MNE"})
        colours, how = None, "time (no usable labels)"
    title = (f"{name}: t-SNE of {len(keep)} windows ({show.signal.window_s:g} s, hop "
             f"{show.signal.hop_s:g} s), coloured by {how}; {rejected} rejected")
    out = plot_map(coords, colours, times, Path(args.out), title=title)
    if args.csv:
        rows = ["window,end_sample,time_s,x,y,label"]
        for k, i in enumerate(keep):
            r = got.results[i]
            rows.append(f"{r.window.index},{r.window.end_sample},{times[k]:.3f},{coords[k, 0]:.4f},"
                        f"{coords[k, 1]:.4f},{got.labels[i] or ''}")
        Path(args.csv).write_text("\n".join(rows) + "\n", encoding="utf-8")
    Console().print(f"map of {len(keep)} windows ({rejected} rejected), coloured by {how}, "
                    f"written to [bold]{out}[/]")
    return 0


# ---------------------------------------------------------------------------------- calibrate
def calibrate_recording(path: str | Path, show: Show, *, labels: list[LabelSpan] | None,
                        annotations: bool) -> tuple[SignalPipeline, Any]:
    """Replay a labelled recording and fit the calibration; return (pipeline, report)."""
    got = collect(path, show, labels=labels, annotations=annotations)
    pipe = got.pipeline
    assert pipe is not None
    if labels is not None:  # labels came from the file: hand them to the calibrator here
        for r, label in zip(got.results, got.labels, strict=True):
            if label is not None and r.features is not None:
                pipe.calibrator.add(r.features.vector, label)
    if not pipe.calibrator.counts():
        raise CalibrationError(f"{path}: no accepted window lies inside a label",
                               hint="use --annotations for a recording with marker annotations, "
                                    "or --labels with onset,duration,label lines")
    return pipe, pipe.fit_calibration()


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    show = _load_show(args.show)
    labels = read_labels(args.labels) if args.labels else None
    if labels is None and not args.annotations:
        raise CalibrationError("calibrate needs labels", hint="pass --annotations or --labels FILE")
    pipe, report = calibrate_recording(args.recording, show, labels=labels,
                                       annotations=args.annotations)
    path = pipe.save_calibration(args.out)
    con = Console()
    table = Table(title=f"calibration from {Path(args.recording).name}")
    table.add_column("label")
    table.add_column("windows", justify="right")
    names = sorted(report.counts)
    for n in names:
        table.add_column(f"→ {n}", justify="right")
    for n, row in zip(names, report.confusion, strict=True):
        table.add_row(n, str(report.counts[n]), *[str(v) for v in row])
    con.print(table)
    con.print(f"{report.summary()}")
    con.print(f"saved to [bold]{path}[/]  (set states.mode = 'calibrated' and "
              f"states.calibration.save = '{path.name}')")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("map", help="offline t-SNE map of every window of a recording (PNG)")
    m.add_argument("recording", help="a recording MNE can read (FIF from `dreamstate record`, EDF, ...)")
    g = m.add_mutually_exclusive_group()
    g.add_argument("--labels", metavar="FILE", help="CSV of onset,duration,label (seconds)")
    g.add_argument("--annotations", action="store_true", help="colour by the recording's markers")
    m.add_argument("--out", default="map.png", help="PNG to write (default map.png)")
    m.add_argument("--csv", metavar="FILE", help="also write window,x,y,label rows")
    m.add_argument("--show", metavar="SHOW", help="take signal settings from this show file")
    m.add_argument("--perplexity", type=float, default=30.0)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--jobs", type=int, default=1, help="openTSNE threads")
    m.set_defaults(func=cmd_map)

    c = sub.add_parser("calibrate", help="fit the calibrated-state classifier on a labelled recording")
    c.add_argument("recording", help="a recording with labelled stretches")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--labels", metavar="FILE", help="CSV of onset,duration,label (seconds)")
    g.add_argument("--annotations", action="store_true", help="use the recording's markers")
    c.add_argument("--out", default="calibration.json", help="calibration JSON to write")
    c.add_argument("--show", metavar="SHOW", help="take signal/states settings from this show")
    c.set_defaults(func=cmd_calibrate)
