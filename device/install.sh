#!/usr/bin/env bash
# Install edgecls's device side on Raspberry Pi OS Bookworm (64-bit), Pi 4 or Pi 5. Idempotent:
# re-running upgrades the package and keeps your /etc/edgecls/camera.env.
#
#   sudo ./install.sh                 # from PyPI: edgecls[device]
#   sudo EDGECLS_PIP_SPEC=/home/pi/edgecls ./install.sh   # from a checkout copied to the Pi
set -euo pipefail

PREFIX=/opt/edgecls
VENV="$PREFIX/venv"
CONF_DIR=/etc/edgecls
STATE_DIR=/var/lib/edgecls
UNIT=/etc/systemd/system/edgecls-camera.service
SERVICE_USER=edgecls
PIP_SPEC="${EDGECLS_PIP_SPEC:-edgecls}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $EUID -ne 0 ]]; then
    echo "Error: run as root: sudo $0" >&2
    exit 1
fi

echo "==> apt packages"
# python3-picamera2: CSI cameras (must come from apt: it is tied to the system libcamera).
# python3-venv: the venv. No python3-opencv: pip's opencv-python-headless (in edgecls[device]) is
# newer and needs no X libraries; with --system-site-packages both would be visible, and the
# venv's copy wins, so installing the apt one would only waste space. No libatlas: numpy wheels
# bundle OpenBLAS on aarch64.
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3-venv python3-pip python3-picamera2 v4l-utils

echo "==> service user"
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "$STATE_DIR" --shell /usr/sbin/nologin --groups video "$SERVICE_USER"
fi
usermod -a -G video "$SERVICE_USER"
getent group render >/dev/null && usermod -a -G render "$SERVICE_USER"

echo "==> venv in $VENV (with --system-site-packages so apt's Picamera2 is importable)"
mkdir -p "$PREFIX/model" "$CONF_DIR" "$STATE_DIR"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/pip" install --upgrade pip
"$VENV/bin/pip" install --upgrade "${PIP_SPEC}[device]"   # a PyPI name or a local checkout folder
chown -R "$SERVICE_USER" "$STATE_DIR"
# Files the service reads must be readable by its user, whatever umask copied them here.
chmod -R a+rX "$PREFIX/model"

echo "==> settings and systemd unit"
if [[ ! -f "$CONF_DIR/camera.env" ]]; then
    install -m 0644 "$HERE/camera.env" "$CONF_DIR/camera.env"   # never overwrite the user's settings
fi
# It may hold the web token and the MQTT password: readable by root (systemd) and the service's
# group only.
chown root:"$SERVICE_USER" "$CONF_DIR/camera.env"
chmod 0640 "$CONF_DIR/camera.env"
install -m 0644 "$HERE/edgecls-camera.service" "$UNIT"
[[ -f "$HERE/README.md" ]] && install -m 0644 "$HERE/README.md" "$PREFIX/README.md"
systemctl daemon-reload

echo "==> check"
"$VENV/bin/edgecls" doctor || true
echo
echo "Done. Next:"
echo "  1. copy your bundle to $PREFIX/model/ (model_int8.tflite + labels.txt)"
echo "  2. edit $CONF_DIR/camera.env (source: 0 for USB, picamera for CSI)"
echo "  3. sudo systemctl enable --now edgecls-camera && journalctl -u edgecls-camera -f"
echo "  (web view, MQTT, uncertain-frame capture: uncomment them in $CONF_DIR/camera.env)"
