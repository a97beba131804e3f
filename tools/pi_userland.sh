#!/usr/bin/env bash
# The Pi's own userland, emulated: Debian bookworm arm64 + Python 3.11 run through qemu-user,
# edgecls[device] installed from aarch64 wheels, then the camera loop on a video, `edgecls verify`,
# `doctor` and a short `bench`, as a Cortex-A72 (Pi 4) and a Cortex-A76 (Pi 5).
#
#   bash tools/pi_userland.sh            # or: make pi-check
#   bash tools/pi_userland.sh --build-only   # only fill the cache (rootfs + wheels), run nothing
#
# It checks CORRECTNESS (the aarch64 runtime reproduces the host's golden outputs, the loop runs,
# the bench JSON names the CPU and its dot-product support). Emulated timings mean nothing:
# qemu-user translates every instruction, so the latencies it prints are not a Pi's.
#
# Needs (tools/system-packages.txt): debootstrap, and qemu-user-static >= 8 from bookworm-backports
# (bookworm's qemu 7.2 segfaults inside ai-edge-litert when the Interpreter is created).
# The rootfs and the wheels are cached under $EDGECLS_PI_CACHE (default .venv-test/pi-userland),
# keyed by their inputs; a warm re-run only installs the fresh edgecls wheel and runs the checks.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_ONLY=0
case "${1:-}" in
  "") ;;
  --build-only) BUILD_ONLY=1 ;;  # the test session starts this in the background (tests/prebuild.py)
  *) echo "Error: unknown option '$1' (usage: bash tools/pi_userland.sh [--build-only])" >&2; exit 2 ;;
esac
REPO=$PWD
PY=${PYTHON:-$REPO/.venv/bin/python}
CACHE=${EDGECLS_PI_CACHE:-$REPO/.venv-test/pi-userland}
CPUS=${EDGECLS_PI_CPUS:-"cortex-a72 cortex-a76"}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBS="python3.11"   # its Depends (libpython3.11-stdlib, libc6, libssl3, ...) come along
# manylinux tags bookworm's glibc 2.36 accepts (wheels are tagged with the oldest glibc they need).
PLATFORMS="manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_24_aarch64 manylinux_2_27_aarch64 manylinux_2_28_aarch64 manylinux_2_31_aarch64 manylinux_2_34_aarch64 manylinux_2_35_aarch64"
QEMU=qemu-aarch64-static

say() { echo "pi-check: $*"; }
die() { echo "Error: $*" >&2; exit 1; }
key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-12; }

command -v "$QEMU" >/dev/null || die "$QEMU not found: bash tools/install_system_packages.sh (qemu-user-static from bookworm-backports)"
command -v debootstrap >/dev/null || die "debootstrap not found: bash tools/install_system_packages.sh"
qemu_major=$("$QEMU" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
[ "${qemu_major:-0}" -ge 8 ] || die "qemu-user-static $qemu_major is too old (7.2 segfaults in ai-edge-litert); install it from bookworm-backports"
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
[ -x "$PY" ] || die "host Python $PY not found (make venv, or set PYTHON=)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9   # two test runs never build one cache at once
t_start=$(date +%s)

# 1. rootfs: Debian's own arm64 packages, unpacked (nothing arm64 runs during the build).
ROOTFS="$CACHE/rootfs-$(key_of "$SUITE" "$DEBS" "$MIRROR" v1)"
if [ ! -f "$ROOTFS/.complete" ]; then
  say "building the $SUITE arm64 rootfs in $ROOTFS (download ~40 MB)"
  rm -rf "$ROOTFS"
  debootstrap --foreign --arch=arm64 --variant=minbase --include="${DEBS// /,}" "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -5 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  # --foreign unpacks only the essential set; the rest waits as .debs for a second stage that
  # would run arm64 maintainer scripts. Python needs none of them: unpack every .deb.
  for deb in "$ROOTFS"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOTFS"; done
  [ -x "$ROOTFS/usr/bin/python3.11" ] || die "python3.11 missing from the rootfs"
  touch "$ROOTFS/.complete"
fi

# 2. wheels: edgecls[device]'s dependencies, aarch64 / CPython 3.11, resolved from a wheel of this checkout.
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
PIP_TARGET_ARGS=(--only-binary=:all: --python-version 311 --implementation cp --abi cp311)
for p in $PLATFORMS; do PIP_TARGET_ARGS+=(--platform "$p"); done
SITE="$CACHE/site-$(key_of "$(sha256sum pyproject.toml)" "$PLATFORMS" v1)"
WHEEL=
build_wheel() {
  # Built from a copy so setuptools leaves no build/ or egg-info in the checkout.
  mkdir -p "$work/src" && cp -r pyproject.toml README.md edgecls "$work/src/"
  local no_isolation
  no_isolation=$("$PY" -c 'import setuptools' 2>/dev/null && echo --no-build-isolation || true)  # offline when it can
  "$PY" -m pip wheel -q --no-deps $no_isolation -w "$work/dist" "$work/src" >"$work/wheel.log" 2>&1 \
    || { cat "$work/wheel.log" >&2; die "building the edgecls wheel failed"; }
  WHEEL=$(ls "$work"/dist/edgecls-*.whl)
}
if [ ! -f "$SITE/.complete" ]; then
  say "installing edgecls[device] aarch64 wheels into $SITE"
  rm -rf "$SITE"
  build_wheel
  "$PY" -m pip install -q --disable-pip-version-check --target "$SITE" "${PIP_TARGET_ARGS[@]}" "$WHEEL[device]" \
    2>&1 | { grep -v "dependency resolver\|^mediapipe \|^WARNING: Location" >&2 || true; }
  touch "$SITE/.complete"
fi
if [ "$BUILD_ONLY" = 1 ]; then
  say "cache ready in $CACHE ($(( $(date +%s) - t_start )) s); nothing run (--build-only)"
  exit 0
fi
[ -n "$WHEEL" ] || build_wheel
# This checkout's edgecls on top of the cached dependencies (they were resolved from the same
# pyproject.toml, which keys the cache), so a code change needs no new download.
"$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$work/edgecls" "${PIP_TARGET_ARGS[@]}" "$WHEEL" \
  2>&1 | { grep -v "dependency resolver\|^mediapipe \|^WARNING: Location" >&2 || true; }  # pip compares --target with the host's venv
# Only the emulated Python sees the aarch64 packages.
AENV=(env PYTHONPATH="$work/edgecls:$SITE" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1)
t_built=$(date +%s)
say "userland ready in $((t_built - t_start)) s"

# 3. what to run: a tiny int8 model + its golden set (made by the host's runtime) + a video.
PYTHONPATH="$REPO" "$PY" "$REPO/tools/pi_fixture.py" "$work/fx" >/dev/null
M="$work/fx/model_int8.tflite"

# One emulated process per CPU runs the commands through edgecls's own CLI entry point: under
# qemu-user each Python start-up with numpy, OpenCV and the runtime costs seconds of translation.
for cpu in $CPUS; do
  say "== $cpu =="
  "${AENV[@]}" "$QEMU" -cpu "$cpu" -L "$ROOTFS" "$ROOTFS/usr/bin/python3.11" - "$cpu" "$work" "$M" <<'EOF'
import contextlib, io, json, platform, sys
from edgecls.cli import cli

cpu, work, model = sys.argv[1:4]


def edgecls(*args):
    """Run one edgecls command as the console script would; its stdout is returned and echoed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main(list(args), prog_name="edgecls", standalone_mode=False)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        except Exception as e:  # ClickException and friends: the command failed
            print(f"Error: {e}")
            code = 1
    sys.stdout.write("".join(f"  | {line}\n" for line in out.getvalue().splitlines()[:12]))
    if code:
        sys.exit(f"Error: {cpu}: 'edgecls {' '.join(args)}' exited {code}")
    return out.getvalue()


if platform.machine() != "aarch64":
    sys.exit(f"Error: not emulating aarch64 ({platform.machine()})")
doctor = json.loads(edgecls("doctor", "--model", model, "--json"))
edgecls("verify", model, "--json", f"{work}/verify-{cpu}.json")
edgecls("camera", "--model", model, "--source", f"{work}/fx/clip.mp4", "--headless", "--max-frames", "24",
        "--jsonl", f"{work}/cam-{cpu}.jsonl", "--stats-json", f"{work}/cam-{cpu}.json", "--force")
edgecls("bench", model, "--runs", "5", "--warmup", "1", "--json", f"{work}/bench-{cpu}.json", "--force")
verify = json.load(open(f"{work}/verify-{cpu}.json"))
bench = json.load(open(f"{work}/bench-{cpu}.json"))
rows = [json.loads(line) for line in open(f"{work}/cam-{cpu}.jsonl")]
m = bench["machine"]
problems = []
if m["arch"] != "aarch64":
    problems.append(f"arch is {m['arch']}")
if not doctor["runtime_ok"] or not doctor["model"]["loads"]:
    problems.append("doctor: the model does not load")
if not verify["passed"]:
    problems.append(f"verify failed: {verify['failure']}")
if len(rows) != 24:
    problems.append(f"camera loop wrote {len(rows)} rows, expected 24")
# qemu's /proc/cpuinfo names the emulated CPU's features: the A76 has the int8 dot-product, the A72 not.
if m["dot_product"] != (cpu != "cortex-a72"):
    problems.append(f"dot_product {m['dot_product']} (features {m['cpu_features']})")
print(f"pi-check: {cpu}: {m['runtime']} {m['runtime_version']}, numpy {m['numpy']}, opencv {m['opencv']}; "
      f"features {' '.join(m['cpu_features'])}; verify {'PASSED' if verify['passed'] else 'FAILED'} "
      f"({'bit-identical to the host' if verify['bit_identical'] else 'max raw diff %g' % verify['max_abs_raw_diff']}); "
      f"camera {len(rows)} frames; bench p50 {bench['results'][0]['latency_ms']['p50']:.2f} ms (emulated: means nothing)")
if problems:
    sys.exit("Error: " + cpu + ": " + "; ".join(problems))
EOF
done
say "passed on $(echo $CPUS | tr ' ' ',') in $(( $(date +%s) - t_start )) s (build $((t_built - t_start)) s). Timings under qemu-user are meaningless; this checks correctness only."
