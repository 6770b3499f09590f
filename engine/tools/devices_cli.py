"""``dreamstate devices``: list serial ports, say which look like a NeuroSky headset and why,
and with ``--probe`` listen on them for valid ThinkGear checksums at each baud rate; then list
the Lab Streaming Layer streams visible on the network (``--lsl-timeout``, 0 to skip)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "devices",
        help="list serial ports and which look like a NeuroSky headset (--probe to listen)")
    p.add_argument("--probe", action="store_true",
                   help="listen on the NeuroSky-looking ports at 57600, 115200 and 9600 baud "
                        "for valid ThinkGear checksums")
    p.add_argument("--all", action="store_true",
                   help="with --probe: probe every port, not only the NeuroSky-looking ones")
    p.add_argument("--port", action="append", default=[],
                   help="probe this port too (any path pyserial can open; repeatable)")
    p.add_argument("--timeout", type=float, default=1.5,
                   help="seconds to listen per port and rate when probing (default 1.5)")
    p.add_argument("--lsl-timeout", type=float, default=1.0,
                   help="seconds to look for LSL streams (default 1; 0 skips the LSL list)")
    p.set_defaults(func=_devices)


def _devices(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from dreamstate.devices.ports import list_ports, make_port_info, probe_order
    from dreamstate.devices.serial_port import probe_port

    console = Console()
    ports = list_ports()
    table = Table(title="serial ports")
    for col in ("port", "description", "VID:PID", "hwid", "NeuroSky?"):
        table.add_column(col, overflow="fold")
    for info in ports:
        verdict = ("[green]likely[/green]: " + "; ".join(info.reasons)
                   if info.looks_like_neurosky else "no")
        table.add_row(info.device, info.description or "-", info.vid_pid or "-",
                      info.hwid or "-", verdict)
    if ports:
        console.print(table)
    else:
        console.print("no serial ports found. Pair the MindWave Mobile (Linux: `rfcomm bind`; "
                      "macOS: /dev/tty.MindWaveMobile*; Windows: the Outgoing COM port) or plug "
                      "in the USB dongle.")
    if args.lsl_timeout > 0:
        _lsl_streams(console, args.lsl_timeout)
    if not args.probe and not args.port:
        if ports:
            console.print("`dreamstate devices --probe` listens on the likely ports for a "
                          "ThinkGear stream.")
        return 0
    targets = [p.device for p in (ports if args.all else
                                  [p for p in probe_order(ports) if p.looks_like_neurosky])]
    if args.probe and not targets and ports:
        console.print("no port looks like a NeuroSky headset; `--probe --all` probes every port")
    targets += [p for p in args.port if p not in targets]
    found = 0
    for port in targets:
        info = make_port_info(port)
        baud, tried = asyncio.run(probe_port(port, timeout=args.timeout))
        if baud is not None:
            found += 1
            console.print(f"[green]{port}: ThinkGear stream at {baud} baud[/green] "
                          f"(set [device] port = \"{port}\", baud = {baud})")
        else:
            console.print(f"[yellow]{port}: no ThinkGear stream[/yellow]"
                          + (f" ({'; '.join(info.reasons)})" if info.reasons else ""))
        for line in tried:
            console.print(f"    {line}")
    return 0 if found or not targets else 1


def _lsl_streams(console: Any, timeout: float) -> None:
    """Print the visible LSL streams and the ``[device.lsl]`` line that would read each."""
    from rich.table import Table

    from dreamstate.devices.lsl import MIN_RATE_HZ, list_streams
    from dreamstate.engine.core.errors import DeviceError

    try:
        streams = list_streams(timeout)
    except DeviceError as exc:
        console.print(f"LSL streams: not listed ({exc})")
        return
    if not streams:
        console.print(f"no LSL streams visible within {timeout:g} s (start muse-lsl, BlueMuse, the OpenBCI GUI's "
                      "LSL output or an amplifier's LSL app)")
        return
    table = Table(title="LSL streams")
    for col in ("name", "type", "channels", "rate", "format", "source_id", "host", "EEG source?"):
        table.add_column(col, overflow="fold")
    usable = [s for s in streams if s.dtype != "string" and s.sfreq >= MIN_RATE_HZ]
    for s in streams:
        table.add_row(s.name, s.stype or "-", str(s.n_channels), f"{s.sfreq:g} Hz" if s.sfreq else "irregular",
                      s.dtype, s.source_id or "-", s.hostname, "[green]yes[/green]" if s in usable else "no")
    console.print(table)
    for s in usable:
        console.print(f'{s.name}: [device] kind = "lsl", lsl = {{ name = "{s.name}" }}', soft_wrap=True,
                      markup=False, highlight=False)
