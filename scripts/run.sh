#!/usr/bin/env bash
# Set up (idempotently) and run parallel-flash on a fresh Debian bookworm machine, as root.
#
#   bash scripts/run.sh demo [ARGS...]   the built-in default job: a simulated line of 8 devices
#                                        booting a WIM and SDI the project generates itself
#   bash scripts/run.sh test [ARGS...]   the whole test suite (pytest), umockdev and wimlib included
#   bash scripts/run.sh fuzz [ARGS...]   the property tests with hypothesis's long profile
#   bash scripts/run.sh bench            every benchmark in benchmarks/
#   bash scripts/run.sh coverage [ARGS]  the test suite under coverage.py, subprocesses included,
#                                        then the per-module figure
#
# It installs the Debian packages it needs (only those missing), creates .venv with the
# project and its test dependencies (pip runs again only when pyproject.toml changed),
# then runs the job from that venv.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  libusb-1.0-0          # libusb, driven through python-libusb1
  umockdev              # emulated USB devices: LD_PRELOAD library and tools
  libumockdev0
  gir1.2-umockdev-1.0   # umockdev's GObject bindings, for the emulator process
  python3-gi            # ... used from Debian's /usr/bin/python3
  wimtools              # libwim15 + wimlib-imagex: WIM capture, checks in tests
  ntfs-3g               # mkntfs for FFU round-trip disk images
  dosfstools            # mkfs.vfat for the EFIESP partition
  mtools
  gdisk                 # sgdisk
  tmux                  # a real pseudo-terminal for the live-table test
  mosquitto             # a real MQTT broker for the line-integration tests
  mosquitto-clients     # mosquitto_sub: the tests' subscriber (and the docs' archiver)
  prometheus            # a real Prometheus scrape, and promtool check metrics
  logrotate             # the docs' report rotation snippet, run for real
  python3-venv
)

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "run.sh: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip runs only when what it installs from changed: pyproject.toml (dependencies,
# entry points) or the interpreter. The install is editable, so source edits
# need no reinstall.
stamp=.venv/.parallel-flash-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python -VV | tr -d '\n')"
if [ ! -x .venv/bin/parallel-flash ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  printf '%s' "$want" >"$stamp"
fi

job=${1:-demo}
shift || true
case "$job" in
  demo)  exec .venv/bin/parallel-flash demo "$@" ;;
  test)  export PARALLEL_FLASH_REQUIRE_ALL=1
         exec .venv/bin/python -m pytest "$@" ;;
  coverage)
         export PARALLEL_FLASH_REQUIRE_ALL=1
         .venv/bin/python -m coverage erase
         status=0
         .venv/bin/python -m coverage run -m pytest "$@" || status=$?
         .venv/bin/python -m coverage combine -q
         .venv/bin/python -m coverage report
         exit "$status" ;;
  fuzz)  export HYPOTHESIS_PROFILE=long
         exec .venv/bin/python -m pytest -m fuzz "$@" ;;
  bench) for script in benchmarks/bench_*.py; do
           echo "== $script"; .venv/bin/python "$script"
         done ;;
  *)     echo "usage: bash scripts/run.sh {demo|test|fuzz|coverage|bench} [ARGS...]" >&2; exit 2 ;;
esac
