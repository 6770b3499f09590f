"""The parser benchmark's stream builder and scoring (the figures it prints must be honest)."""

from __future__ import annotations

import numpy as np
import pytest

from dreamstate.engine.tools import bench_parser as bench
from dreamstate.engine.tools.cli import main


def test_streams_and_fault_injection() -> None:
    clean, ct, dirty, dt = bench.build_streams(10.0, seed=3)
    assert len(ct.raw) == 5120 and ct.raw_intact.all()
    assert len(ct.status) == 10
    assert len(clean) == 5120 * 8 + 10 * 36 + 6 * len(ct.blinks)
    assert sum(dt.faults.values()) > 50
    lost = dt.faults["bad_checksum"] + dt.faults["truncated"]
    damaged = int((~dt.raw_intact).sum()) + dt.status_intact.count(False) + \
        dt.blinks_intact.count(False)
    assert damaged == lost
    assert len(dirty) > len(clean) - 8 * lost
    # realistic values: EEG-sized, not random int16
    assert 20 < np.abs(ct.raw).mean() < 1000


def test_ours_decodes_every_intact_packet_and_nothing_else() -> None:
    _, _, dirty, truth = bench.build_streams(8.0, seed=4)
    sc = bench.score(truth, bench.decode_ours(bench.run_ours(dirty, 1000)))
    assert sc.raw_intact_decoded == sc.raw_intact_sent
    assert sc.raw_spurious == 0 and sc.other_spurious == 0
    assert sc.status_intact_decoded == sc.status_intact_sent


def test_scoring_counts_spurious_and_missing() -> None:
    sent = list(range(1000))
    intact = [True] * 1000
    intact[5] = False
    decoded = [0, 1, 2, 3, 4, 5, 99999, *range(300, 1000)]  # 5 was damaged; 6..299 lost
    got, damaged, spurious = bench.align(sent, intact, decoded)
    assert (got, damaged, spurious) == (5 + 700, 1, 1)


def test_peer_parser_runs() -> None:
    clean, truth, _, _ = bench.build_streams(2.0, seed=0)
    sc = bench.score(truth, bench.decode_thinkgear_py3(*bench.run_thinkgear_py3(clean)))
    assert sc.raw_intact_decoded == sc.raw_intact_sent  # it handles a clean stream
    assert sc.status_intact_decoded == 0  # its band powers are wrong (only delta is right)


def test_bench_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "parser", "--seconds", "3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "ThinkGear parser benchmark" in out
    assert "thinkgear-py3" in out and "throughput" in out
    assert "100.00" in out
