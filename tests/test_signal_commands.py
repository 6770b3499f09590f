"""`dreamstate map` and `dreamstate calibrate` over recordings replayed by devices.replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamstate.devices.simulator import EegSimulator
from dreamstate.engine.core.errors import RecordingError
from dreamstate.engine.core.show import MapConfig, SignalConfig, StatesConfig
from dreamstate.engine.signal.pipeline import SignalPipeline, WindowResult
from dreamstate.engine.tools.cli import main
from dreamstate.engine.tools.signal_cli import read_labels

SF = 512.0


def write_recording(path: Path, script: list[tuple[str, float]], seed: int, *,
                    annotate: bool = True) -> Path:
    """A simulated session saved as FIF with MNE: Fp1 in volts, one annotation per clip."""
    import mne

    sim = EegSimulator(script, seed=seed, loop=False)
    block = sim.advance(sim.script_samples)
    uv = block.uv().astype(np.float64)
    info = mne.create_info(["Fp1"], SF, ["eeg"])
    raw = mne.io.RawArray(uv[None, :] * 1e-6, info, verbose="error")
    if annotate:
        onsets, durations, names = [], [], []
        t = 0.0
        for state, secs in script:
            onsets.append(t)
            durations.append(secs)
            names.append(f"marker:{state}")
            t += secs
        raw.set_annotations(mne.Annotations(onsets, durations, names))
    raw.save(path, overwrite=True, verbose="error")
    return path


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("rec")
    script = [("relaxed", 15.0), ("focused", 15.0), ("relaxed", 15.0), ("focused", 15.0)]
    train = write_recording(d / "train_raw.fif", script, seed=21)
    test = write_recording(d / "test_raw.fif", [("focused", 15.0), ("relaxed", 15.0)], seed=22)
    return train, test


def test_calibrate_end_to_end_over_replayed_recordings(recordings: tuple[Path, Path],
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    train, test = recordings
    out = tmp_path / "calib.json"
    assert main(["calibrate", str(train), "--annotations", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "held-out accuracy" in text and "relaxed" in text and out.exists()
    # the saved calibration (JSON) drives a calibrated pipeline over another replayed session
    states = StatesConfig(mode="calibrated", labels=["relaxed", "focused"], dwell_s=0.0,
                          hysteresis=0.0)
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=20000), states, live_map=False)
    report = pipe.load_calibration(out)
    assert report.accuracy >= 0.9
    results = replay_into(test, pipe)
    scored = [(r.label, r.state.label) for r in results if r.label and r.features is not None]
    acc = float(np.mean([a == b for a, b in scored]))
    assert len(scored) > 100 and acc >= 0.9, acc


def replay_into(path: Path, pipe: SignalPipeline) -> list[WindowResult]:
    """Replay ``path`` (unpaced) through ``pipe`` with devices.replay, markers included."""
    import asyncio

    from dreamstate.devices.replay import ReplayDevice

    out: list[WindowResult] = []

    async def run() -> None:
        async with ReplayDevice(path, speed=0, chunk=256) as dev:
            async for reading in dev.readings():
                out.extend(pipe.feed(reading))

    asyncio.run(asyncio.wait_for(run(), 120))
    return out


def test_calibrate_with_a_labels_file_and_too_few_windows(recordings: tuple[Path, Path],
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    train, _ = recordings
    labels = tmp_path / "labels.csv"
    labels.write_text("onset,duration,label\n0,15,calm\n15,15,busy\n# comment\n30,15,calm\n")
    out = tmp_path / "c.json"
    assert main(["calibrate", str(train), "--labels", str(labels), "--out", str(out)]) == 0
    short = tmp_path / "short.csv"
    short.write_text("0,15,calm\n15,2,busy\n")
    assert main(["calibrate", str(train), "--labels", str(short), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "at least 20" in err and "busy: 7" in err and "short: ['busy']" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("0,fifteen,calm\n")
    with pytest.raises(RecordingError, match="line 1"):
        read_labels(bad)


def test_map_writes_a_png_coloured_by_label_or_time(recordings: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    train, _ = recordings
    png = tmp_path / "map.png"
    csv = tmp_path / "map.csv"
    assert main(["map", str(train), "--annotations", "--out", str(png), "--csv", str(csv)]) == 0
    img = mpimg.imread(png)
    assert img.shape[0] > 400 and img.shape[1] > 400
    assert img[..., :3].std() > 0.05  # not blank
    rows = csv.read_text().splitlines()
    assert rows[0] == "window,end_sample,time_s,x,y,label" and len(rows) > 200
    labels = {r.rsplit(",", 1)[1] for r in rows[1:]}
    assert {"relaxed", "focused"} <= labels
    png2 = tmp_path / "time.png"
    assert main(["map", str(train), "--out", str(png2)]) == 0
    assert png2.stat().st_size > 10_000


def test_map_of_a_missing_file_fails_with_the_name(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope_raw.fif"
    assert main(["map", str(missing), "--out", str(tmp_path / "m.png")]) == 1
    assert "nope_raw.fif" in capsys.readouterr().err


def test_bench_signal_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "signal", "--seconds", "36", "--reference", "60",
                 "--naive-windows", "10"])
    out = capsys.readouterr().out
    assert code == 0
    for needle in ("ours p50", "naive", "p99", "total", "trustworthiness", "speed-up", "openTSNE"):
        assert needle in out, needle


@pytest.mark.parametrize(("kind", "reason"), [
    ("no annotations", "the recording has no annotations"),
    ("only BAD_", "annotations mark bad or edge stretches (BAD_blink)"),
    ("labels past the end", "none of the 1 label spans covers a whole usable window (the spans reach 130 s"),
])
def test_map_says_when_there_are_no_usable_labels(tmp_path: Path, kind: str, reason: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Asked to colour by label with nothing usable, map said "coloured by label" and drew the
    time colouring; now it says which it drew and why (issue 11, item 10)."""
    import mne

    rec = write_recording(tmp_path / "r_raw.fif", [("relaxed", 20.0)], seed=5, annotate=False)
    argv = ["map", str(rec), "--out", str(tmp_path / "m.png"), "--perplexity", "5"]
    if kind == "only BAD_":
        raw = mne.io.read_raw_fif(rec, preload=True, verbose="error")
        raw.set_annotations(mne.Annotations([1.0, 5.0], [0.5, 0.5], ["BAD_blink", "BAD_blink"]))
        raw.save(rec, overwrite=True, verbose="error")
    if kind == "labels past the end":
        spans = tmp_path / "labels.csv"
        spans.write_text("100,30,calm\n")
        argv += ["--labels", str(spans)]
    else:
        argv += ["--annotations"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "coloured by time (no usable labels)" in captured.out
    assert "coloured by label" not in captured.out
    assert reason in captured.err
