"""Crash-safe recording: journal, torn tails, FIF layout, kill -9 and SIGINT on the real CLI."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import mne
import numpy as np
import pytest

from dreamstate.devices.recording import (
    GAP_ANNOTATION,
    MISC_CHANNELS,
    STIM_CHANNEL,
    Recorder,
    fif_for_journal,
    fif_path,
    journal_path_for,
    journal_to_raw,
    read_journal,
    recover,
)
from dreamstate.devices.simulator import EegSimulator, SimulatedDevice
from dreamstate.engine.core.errors import RecordingError
from dreamstate.engine.core.records import (
    Blink,
    DeviceEvent,
    DeviceEventKind,
    ESense,
    Marker,
    RawChunk,
    Reading,
    SignalQuality,
)

SFREQ = 512


async def simulated(script: list[tuple[str, float]], seed: int) -> list[Reading]:
    dev = SimulatedDevice(script, seed=seed, loop=False, speed=0)
    out: list[Reading] = []
    async with dev:
        async for r in dev.readings():
            out.append(r)
    return out


async def record(readings: list[Reading], journal: Path) -> Recorder:
    rec = Recorder(journal, device="test", flush_s=0.01, fsync_s=0.02)
    await rec.start()
    for r in readings:
        rec.add(r)
    await rec.close()
    return rec


def test_fif_names_are_the_users_own(tmp_path: Path) -> None:
    """The path given is the path written (no quiet renaming); other names are refused."""
    for name in ("session.fif", "s_raw.fif", "s_eeg.fif", "s.fif.gz"):
        assert fif_path(tmp_path / name) == tmp_path / name
    assert journal_path_for(tmp_path / "s_raw.fif") == tmp_path / "s_raw.dsj"
    assert journal_path_for(tmp_path / "session.fif") == tmp_path / "session.dsj"
    assert fif_for_journal(tmp_path / "s_raw.dsj") == tmp_path / "s_raw.fif"
    assert fif_for_journal(tmp_path / "s_raw.journal") == tmp_path / "s_raw.fif"  # what shows wrote
    with pytest.raises(RecordingError, match="FIF"):
        fif_path(tmp_path / "s.edf")
    with pytest.raises(RecordingError, match=r"must end in \.fif.*s_raw\.fif"):
        fif_path(tmp_path / "s")


async def test_journal_round_trip_and_fif_layout(tmp_path: Path) -> None:
    readings = await simulated([("relaxed", 2), ("blinking", 3)], seed=3)
    readings.insert(len(readings) // 2, Marker("fun", 0.0, duration=1.5))
    journal = tmp_path / "a_raw.dsj"
    rec = await record(readings, journal)
    assert rec.counters.get("fsyncs") >= 1 and rec.flushed_samples == 5 * SFREQ

    contents = read_journal(journal)
    assert contents.clean_end and contents.torn_tail_bytes == 0 and contents.corrupt_records == 0
    raw_in = np.concatenate([r.samples for r in readings if isinstance(r, RawChunk)])
    np.testing.assert_array_equal(np.concatenate([s for _, s in contents.segments]), raw_in)
    kinds = [e["k"] for e in contents.events]
    assert kinds.count("esense") == 5 and kinds.count("marker") == 1
    assert kinds[0] == "device" and kinds[-1] == "device"  # connected ... end of stream

    raw = journal_to_raw(contents)
    assert raw.ch_names == ["Fp1", *MISC_CHANNELS, STIM_CHANNEL]
    assert raw.get_channel_types()[:2] == ["eeg", "misc"] and raw.get_channel_types()[-1] == "stim"
    np.testing.assert_allclose(raw.get_data(picks="Fp1")[0] * 1e6, raw_in, atol=1e-3)
    # Sample-and-hold: attention at the end equals the last ESense.
    last = [r for r in readings if isinstance(r, ESense)][-1]
    assert raw.get_data(picks="attention")[0][-1] == last.attention
    assert raw.get_data(picks="attention")[0][0] == -1  # not reported yet
    stim = raw.get_data(picks=STIM_CHANNEL)[0]
    assert np.count_nonzero(stim) == 5 and set(stim[stim > 0]) == {7.0}
    desc = list(raw.annotations.description)
    assert desc.count("marker:fun") == 1
    n_blinks = sum(isinstance(r, Blink) for r in readings)
    assert sum(d.startswith("blink:") for d in desc) == n_blinks > 0
    fun = raw.annotations[desc.index("marker:fun")]
    assert fun["duration"] == pytest.approx(1.5)
    meta = json.loads(raw.info["description"])
    assert meta["first_index"] == 0 and meta["lost_samples"] == 0


async def test_gaps_are_annotated_and_not_invented(tmp_path: Path) -> None:
    sim = EegSimulator([("neutral", 3)], seed=1, loop=False)
    block = sim.advance(3 * SFREQ)
    uv = block.uv()
    readings: list[Reading] = [
        RawChunk(1000, uv[:512], 1.0),
        SignalQuality(0, 1.0),
        RawChunk(1000 + 700, uv[700:1536], 2.0),  # 188 samples never arrived
        ESense(40, 60, 2.0),
    ]
    journal = tmp_path / "g_raw.dsj"
    rec = await record(readings, journal)
    assert rec.counters.get("gaps") == 1 and rec.counters.get("lost_samples") == 188
    result = recover(journal, tmp_path / "g.fif")
    assert result.fif == tmp_path / "g.fif" and result.lost_samples == 188
    raw = mne.io.read_raw_fif(result.fif, preload=True, verbose="error")
    assert raw.n_times == 1536
    gaps = [a for a in raw.annotations if a["description"] == GAP_ANNOTATION]
    assert len(gaps) == 1
    assert gaps[0]["onset"] == pytest.approx(512 / SFREQ)
    assert gaps[0]["duration"] == pytest.approx(188 / SFREQ)
    eeg = raw.get_data(picks="Fp1")[0] * 1e6
    np.testing.assert_allclose(eeg[:512], uv[:512], atol=1e-3)
    np.testing.assert_allclose(eeg[700:], uv[700:], atol=1e-3)
    assert json.loads(raw.info["description"])["first_index"] == 1000
    # The ESense arrived after the last sample: held on it.
    assert raw.get_data(picks="meditation")[0][-1] == 60


async def test_torn_tail_and_corrupt_middle_are_survived(tmp_path: Path) -> None:
    readings = await simulated([("neutral", 2)], seed=2)
    journal = tmp_path / "t_raw.dsj"
    # Several small records: one raw record per chunk.
    rec = Recorder(journal, flush_s=10.0)
    await rec.start()
    for r in readings:
        rec.add(r)
        if isinstance(r, RawChunk):
            await rec.flush()
    await rec.close()
    data = journal.read_bytes()
    full = read_journal(journal)
    full_raw = np.concatenate([s for _, s in full.segments])
    # Cut the file at every byte of its last 300 bytes: never an error, always a prefix.
    for cut in range(len(data) - 300, len(data)):
        journal.write_bytes(data[:cut])
        part = read_journal(journal)
        assert not part.clean_end
        assert part.corrupt_records == 0
        got = np.concatenate([s for _, s in part.segments])
        np.testing.assert_array_equal(got, full_raw[:len(got)])
        assert len(got) >= len(full_raw) - 64  # only the torn records are lost
    # Flip a byte inside an early raw record: that record is skipped, the rest is read.
    bad = bytearray(data)
    bad[len(data) // 3] ^= 0xFF
    journal.write_bytes(bytes(bad))
    hurt = read_journal(journal)
    assert hurt.corrupt_records == 1 and hurt.clean_end
    assert full.n_samples - 16 <= hurt.n_samples < full.n_samples
    journal.write_bytes(b"not a journal")
    with pytest.raises(RecordingError, match="not a dreamstate journal"):
        read_journal(journal)


async def test_existing_journal_is_not_overwritten(tmp_path: Path) -> None:
    journal = tmp_path / "x_raw.dsj"
    journal.write_bytes(b"DSJOURNAL1\n")
    with pytest.raises(RecordingError, match="dreamstate recover"):
        await Recorder(journal).start()


async def test_finalise_writes_fif_and_removes_journal(tmp_path: Path) -> None:
    readings = await simulated([("relaxed", 2)], seed=4)
    rec = Recorder(tmp_path / "f_raw.dsj")
    await rec.start()
    for r in readings:
        rec.add(r)
    result = await rec.finalise(tmp_path / "f.fif")
    assert result.fif.exists() and not (tmp_path / "f_raw.dsj").exists()
    assert result.samples == 2 * SFREQ and result.clean_end
    with pytest.raises(RecordingError, match="no raw samples"):
        empty = Recorder(tmp_path / "e_raw.dsj")
        await empty.start()
        empty.add(DeviceEvent(DeviceEventKind.CONNECTED, 0.0))
        await empty.finalise(tmp_path / "e.fif")


# --------------------------------------------------------------------------- real CLI


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dreamstate", *args]


PROGRESS = re.compile(r"samples=(\d+) flushed=(\d+)")


def wait_progress(proc: subprocess.Popen[str], min_flushed: int, timeout: float = 60.0
                  ) -> tuple[int, int]:
    """Read progress lines until ``flushed >= min_flushed``; return (samples, flushed)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            assert proc.poll() is None, f"record exited early: {proc.stderr.read() if proc.stderr else ''}"
            continue
        line = proc.stdout.readline()
        m = PROGRESS.search(line)
        if m and int(m.group(2)) >= min_flushed:
            return int(m.group(1)), int(m.group(2))
    raise AssertionError("no progress line from `dreamstate record`")


SCRIPT = "relaxed:30,blinking:30"


def expected_uv(n: int) -> np.ndarray:
    sim = EegSimulator([("relaxed", 30), ("blinking", 30)], seed=11)
    return sim.advance(n).uv()


@pytest.mark.slow
def test_kill_9_then_recover_loses_at_most_a_second(tmp_path: Path) -> None:
    out = tmp_path / "k.fif"
    proc = subprocess.Popen(cli("record", "--simulate", "--seed", "11", "--script", SCRIPT,
                                "--out", str(out)), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        samples, flushed = wait_progress(proc, 3 * SFREQ)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    journal = tmp_path / "k.dsj"
    assert journal.exists() and not (tmp_path / "k.fif").exists()
    res = subprocess.run(cli("recover", str(journal)), cwd=tmp_path, text=True,
                         capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "did not finish" in res.stdout
    raw = mne.io.read_raw_fif(tmp_path / "k.fif", preload=True, verbose="error")
    n = raw.n_times
    # Everything handed to the OS survives; at most a second (+ a chunk) of what had been
    # produced when the progress line was printed is missing.
    assert n >= flushed
    assert n >= samples - SFREQ - 16
    np.testing.assert_allclose(raw.get_data(picks="Fp1")[0] * 1e6, expected_uv(n), atol=1e-3)
    assert np.count_nonzero(raw.get_data(picks=STIM_CHANNEL)[0]) >= n // SFREQ - 1


def test_sigint_finalises_the_fif(tmp_path: Path) -> None:
    out = tmp_path / "i.fif"
    proc = subprocess.Popen(cli("record", "--simulate", "--seed", "11", "--script", SCRIPT,
                                "--out", str(out)), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        samples, _ = wait_progress(proc, SFREQ)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "saved" in stdout
    fif = tmp_path / "i.fif"  # the name asked for, not i_raw.fif
    assert fif.exists() and not (tmp_path / "i.dsj").exists() and not (tmp_path / "i_raw.fif").exists()
    raw = mne.io.read_raw_fif(fif, preload=True, verbose="error")
    assert raw.n_times >= samples
    np.testing.assert_allclose(raw.get_data(picks="Fp1")[0] * 1e6, expected_uv(raw.n_times),
                               atol=1e-3)
    assert json.loads(raw.info["description"])["clean_end"] is True


def test_record_refuses_a_non_fif_output(tmp_path: Path) -> None:
    res = subprocess.run(cli("record", "--simulate", "--out", str(tmp_path / "x.edf"),
                             "--seconds", "1"), cwd=tmp_path, text=True, capture_output=True,
                         timeout=60, check=False)
    assert res.returncode == 1
    assert "records FIF" in res.stderr



class FullDisk:
    """os.write that fails with ENOSPC while ``full`` (after writing part of the data first,
    as a filling disk does)."""

    def __init__(self) -> None:
        self.full = False
        self.refused = 0

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.full:
            self.refused += 1
            if len(data) > 64 and self.refused % 2:
                return os.write(fd, data[:37])  # a partial write, then the error on the next call
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


async def test_a_full_disk_loses_nothing_once_space_comes_back(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    readings = await simulated([("relaxed", 6)], seed=5)
    journal = tmp_path / "d_raw.dsj"
    rec = Recorder(journal, flush_s=0.01, fsync_s=0.02)
    disk = FullDisk()
    rec.os_write = disk
    await rec.start()
    total = sum(len(r.samples) for r in readings if isinstance(r, RawChunk))
    third = len(readings) // 3
    with caplog.at_level(logging.WARNING, logger="dreamstate.devices.recording"):
        for r in readings[:third]:
            rec.add(r)
        await rec.flush()
        disk.full = True
        for r in readings[third:2 * third]:
            rec.add(r)
            await rec.flush()
        status = rec.status()
        assert status["state"] == "disk_full" and status["buffered_s"] > 0.5, status
        disk.full = False
        for r in readings[2 * third:]:
            rec.add(r)
        await rec.flush()
        assert rec.status()["state"] == "ok"
        await rec.close()
    contents = read_journal(journal)
    assert contents.n_samples == total and contents.corrupt_records == 0 and contents.clean_end
    errors = [r for r in caplog.records if "journal write failed" in r.getMessage()]
    assert len(errors) == 1 and disk.refused > 3  # once per state change, not per retry
    assert any("writable again" in r.getMessage() for r in caplog.records)


def test_the_fif_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies half-way (full disk, crash) leaves no partial FIF under the final
    name, cleans its temporary file, and the journal stays for `recover`."""
    sim = EegSimulator([("neutral", 3)], seed=1, loop=False)
    raw_chunk = RawChunk(0, sim.advance(3 * SFREQ).uv(), 0.0)
    journal = tmp_path / "a_raw.dsj"
    asyncio.run(record([raw_chunk], journal))
    out = tmp_path / "a_raw.fif"
    out.write_bytes(b"an older good file")

    original = mne.io.BaseRaw.save

    def dying_save(self: mne.io.BaseRaw, fname: Path, *args: object, **kwargs: object) -> None:
        Path(fname).write_bytes(b"\x00" * 1000)  # half a file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mne.io.BaseRaw, "save", dying_save)
    with pytest.raises(RecordingError, match="journal is kept"):
        recover(journal, out)
    assert out.read_bytes() == b"an older good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_raw.dsj", "a_raw.fif"]
    monkeypatch.setattr(mne.io.BaseRaw, "save", original)
    result = recover(journal, out)
    assert mne.io.read_raw_fif(result.fif, verbose="error").n_times == 3 * SFREQ


@pytest.mark.slow
def test_kill_9_during_finalisation_leaves_a_whole_fif_or_the_journal(tmp_path: Path) -> None:
    """SIGINT, then SIGKILL a moment later, at several moments: never an empty or partial FIF."""
    for i, delay in enumerate((0.02, 0.1, 0.3)):
        out = tmp_path / f"f{i}.fif"
        proc = subprocess.Popen(cli("record", "--simulate", "--seed", "11", "--script", SCRIPT,
                                    "--out", str(out)), cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_progress(proc, 2 * SFREQ)
            proc.send_signal(signal.SIGINT)
            time.sleep(delay)
            proc.kill()
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        journal = tmp_path / f"f{i}.dsj"
        if out.exists():
            assert mne.io.read_raw_fif(out, verbose="error").n_times >= SFREQ
        else:
            assert journal.exists()
        # a kill during the write may leave this file's temporary behind, never beside a whole FIF
        assert not list(tmp_path.glob(f".{out.name}.*partial*")) or not out.exists()


def test_a_leftover_journal_is_announced_with_the_command_to_recover_it(tmp_path: Path) -> None:
    leftover = tmp_path / "old-20260101_raw.journal"
    asyncio.run(record([RawChunk(0, np.zeros(512, np.float32), 0.0)], leftover))
    res = subprocess.run(cli("record", "--simulate", "--seconds", "1", "--out", str(tmp_path / "new.fif")),
                         cwd=tmp_path, text=True, capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert f"dreamstate recover {leftover}" in res.stderr
    res = subprocess.run(cli("recover", str(leftover)), cwd=tmp_path, text=True, capture_output=True,
                         timeout=60, check=False)
    assert res.returncode == 0 and (tmp_path / "old-20260101_raw.fif").exists(), res.stderr
