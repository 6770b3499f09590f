#!/usr/bin/env bash
# Set up dreamstate on a fresh Debian/Ubuntu machine: system packages, a virtualenv in .venv,
# and the package with its test tools. Safe to run again; it only adds what is missing.
# --system-only: install the system packages and stop.
set -euo pipefail
cd "$(dirname "$0")/.."

# Xvfb + xwd: a real X server for the window tests; mosquitto (+ mosquitto_passwd): a real MQTT
# broker for the MQTT tests; openssl: certificates the TLS tests make; liblo-tools: oscsend/oscdump,
# OSC clients written by others, for the OSC tests; systemd: systemd-analyze verifies the kiosk unit;
# libcairo2: the C library CairoSVG uses to rasterise drawings' SVG in the tests
APT_PACKAGES=(xvfb x11-apps mosquitto openssl liblo-tools systemd libcairo2)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}" >&2
  # another apt (unattended upgrades, a package manager window) may hold the lock: wait up to
  # 5 minutes for it instead of failing at once
  LOCK_WAIT=(-o DPkg::Lock::Timeout=300)
  if pgrep -x apt-get >/dev/null 2>&1 || pgrep -x apt >/dev/null 2>&1 || pgrep -x unattended-upgr >/dev/null 2>&1; then
    echo "setup: another package manager is running; waiting for it (up to 5 minutes)" >&2
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "${LOCK_WAIT[@]}" update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "${LOCK_WAIT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--system-only" ]; then
  exit 0  # the system packages are in place; no virtualenv wanted
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev,ndi]'  # ndi: tests/test_ndi.py sends and receives NDI on loopback
echo "setup: ok ($(.venv/bin/python --version), .venv ready)" >&2
