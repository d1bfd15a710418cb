#!/usr/bin/env bash
# Install edge-facedet from this checkout as a systemd service (run as root).
#
#   sudo bash deploy/install.sh [--prefix /opt/edge-facedet] [--etc /etc/edge-facedet]
#                               [--root DIR] [--model-mirror DIR] [--python PY]
#                               [--no-systemd] [--start] [--uninstall]
#
# Installs: a venv at <prefix>/venv with the package and the exact dependency versions of
# requirements.lock (hash-checked), the model at <prefix>/models, <prefix>/README.md, a
# starter <etc>/config.yaml (only if there is none: an existing config is never touched),
# the full reference <etc>/config.example.yaml, <etc>/credentials/ (0700, one file per
# secret, loaded by LoadCredential=) and the unit /etc/systemd/system/edge-facedet.service
# (enabled, not started unless --start). Idempotent: a second run changes nothing on disk.
# --root DIR installs below DIR (like DESTDIR, for tests and packaging; systemctl is then
# never called). --uninstall removes the venv, the models, the README and the unit; config
# and credentials stay. Model source: --model-mirror, else ../shared/models beside the
# checkout if present, else the Open Model Zoo download.
set -euo pipefail

usage() {
    sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

prefix=/opt/edge-facedet
etc=/etc/edge-facedet
root=/
model_mirror=""
python="${PYTHON:-python3}"
use_systemd=1
start=0
uninstall=0
while (($#)); do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --etc) etc=${2:?--etc needs a directory}; shift 2 ;;
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --model-mirror) model_mirror=${2:?--model-mirror needs a directory}; shift 2 ;;
        --python) python=${2:?--python needs an interpreter}; shift 2 ;;
        --no-systemd) use_systemd=0; shift ;;
        --start) start=1; shift ;;
        --uninstall) uninstall=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'install.sh: unknown option %s (see --help)\n' "$1" >&2; exit 2 ;;
    esac
done

for dir in "$prefix" "$etc" "$root"; do
    [[ $dir == /* ]] || die "paths must be absolute, got $dir"
done
# The unit file names these paths; a space or a % would need systemd quoting.
for dir in "$prefix" "$etc"; do
    [[ $dir =~ ^/[A-Za-z0-9._/-]+$ ]] || die "$dir: only letters, digits, . _ - / are supported"
done
root=${root%/}
dest_prefix=$root$prefix
dest_etc=$root$etc
venv=$dest_prefix/venv
models=$dest_prefix/models
unit_dir=$root/etc/systemd/system
unit=$unit_dir/edge-facedet.service
config=$dest_etc/config.yaml
credentials=$dest_etc/credentials

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# systemctl only for the real system: with --root the files are staged for something else.
systemd_live=0
if ((use_systemd)) && [[ -z $root && -d /run/systemd/system ]]; then
    systemd_live=1
fi
if [[ -z $root && $EUID -ne 0 ]]; then
    die "installing into / needs root (sudo bash $0 ...)"
fi
if ((start && !systemd_live)); then
    die "--start needs a running systemd and no --root/--no-systemd"
fi

# Bytecode written by the CLI calls below would make a second run look like a change.
export PYTHONDONTWRITEBYTECODE=1

# --- uninstall ------------------------------------------------------------------------------
if ((uninstall)); then
    if ((systemd_live)) && [[ -e $unit ]]; then
        say "systemd: stopping and disabling edge-facedet"
        systemctl disable --now edge-facedet.service || true
        # The compiled-model cache (CacheDirectory=) belongs to the unit; remove it with it.
        systemctl clean --what=cache edge-facedet.service 2>/dev/null || true
    fi
    removed=0
    for path in "$unit" "$venv" "$models" "$dest_prefix/README.md" "$dest_etc/config.example.yaml"; do
        if [[ -e $path || -L $path ]]; then
            say "removing $path"
            rm -rf -- "$path"
            removed=1
        fi
    done
    rmdir -- "$dest_prefix" 2>/dev/null || true
    if ((systemd_live && removed)); then
        systemctl daemon-reload
    fi
    say "kept $config and $credentials/ (your settings and secrets); delete them by hand if unwanted"
    exit 0
fi

# --- checks ---------------------------------------------------------------------------------
[[ -f $repo/pyproject.toml && -d $repo/edge_facedet ]] || die "$repo is not an edge-facedet checkout"
[[ -f $repo/deploy/requirements.lock ]] || die "$repo/deploy/requirements.lock is missing"
command -v "$python" >/dev/null || die "no $python found (use --python)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$python is older than 3.10"
"$python" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$python cannot create venvs; install python3-venv (apt-get install python3-venv)"

if [[ -z $model_mirror && -d $(dirname "$repo")/shared/models ]]; then
    model_mirror=$(dirname "$repo")/shared/models
fi
if [[ -n $model_mirror && ! -d $model_mirror ]]; then
    die "--model-mirror $model_mirror is not a directory"
fi
[[ -z $model_mirror ]] || model_mirror=$(cd "$model_mirror" && pwd)

# install_file MODE SRC DST: copy only when the content or mode differs, so an unchanged
# file keeps its mtime. Prints whether it changed (for daemon-reload).
install_file() {
    local mode=$1 src=$2 dst=$3
    if [[ -f $dst ]] && cmp -s -- "$src" "$dst" && [[ $(stat -c %a -- "$dst") == "${mode#0}" ]]; then
        return 1
    fi
    install -D -m "$mode" -- "$src" "$dst"
    return 0
}

# --- venv and package -----------------------------------------------------------------------
install -d -m 0755 -- "$dest_prefix"
if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    say "venv: $venv"
else
    say "venv: creating $venv"
    "$python" -m venv --clear -- "$venv"
fi

# What pip would install: the locked dependencies, the package sources and the build metadata.
# Hashing them decides whether pip runs at all (pip itself would rebuild and reinstall a local
# path every time).
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/edge_facedet/__init__.py")
[[ -n $version ]] || die "cannot read __version__ from $repo/edge_facedet/__init__.py"
source_hash=$(
    cd "$repo"
    {
        find edge_facedet -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
            | sort -z | xargs -0 sha256sum
        sha256sum pyproject.toml README.md deploy/requirements.lock
        "$venv/bin/python" -V 2>&1
    } | sha256sum | cut -d' ' -f1
)
stamp=$venv/.edge-facedet-install
want_stamp="edge-facedet $version source-sha256 $source_hash"
installed_version=$("$venv/bin/edge-facedet" --version 2>/dev/null || true)
if [[ -f $stamp && $(<"$stamp") == "$want_stamp" && $installed_version == "edge-facedet $version" ]]; then
    say "package: edge-facedet $version up to date"
else
    say "package: installing edge-facedet $version into $venv (dependencies from requirements.lock)"
    pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input)
    # The exact, sha256-checked versions of the lock, then the package alone: an install done
    # a week later gets the same dependencies, whatever was released in between.
    "${pip[@]}" --require-hashes -r "$repo/deploy/requirements.lock" \
        || die "pip install -r requirements.lock failed (see above)"
    # Build from a copy: pip builds a local path in place, and root-owned build/ and
    # *.egg-info directories would be left in the operator's checkout.
    stage=$(mktemp -d)
    trap 'rm -rf -- "$stage"' EXIT
    cp -a -- "$repo/pyproject.toml" "$repo/README.md" "$repo/edge_facedet" "$stage/"
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +
    "${pip[@]}" --no-deps --upgrade -- "$stage" || die "pip install failed (see above)"
    rm -rf -- "$stage"
    trap - EXIT
    printf '%s\n' "$want_stamp" >"$stamp"
fi
cli=$venv/bin/edge-facedet
# The unit's Documentation= (`systemctl help edge-facedet`) points at this copy.
install_file 0644 "$repo/README.md" "$dest_prefix/README.md" || true

# --- model ----------------------------------------------------------------------------------
# FP16-INT8 is the default precision (CPU); FP16 is what GPU/NPU users switch to.
fetch_args=(--dest "$models")
if [[ -n $model_mirror ]]; then
    fetch_args+=(--mirror "$model_mirror")
    say "model: $models (from mirror $model_mirror)"
else
    say "model: $models (downloading from Open Model Zoo)"
fi
for precision in FP16-INT8 FP16; do
    # Quiet when all is well (it reports every verified file); its message when not.
    if ! output=$("$cli" model fetch --precision "$precision" "${fetch_args[@]}" 2>&1); then
        printf '%s\n' "$output" >&2
        die "model fetch $precision failed (see above)"
    fi
done

# --- configuration and credentials ----------------------------------------------------------
install -d -m 0755 -- "$dest_etc"
if [[ -d $credentials ]]; then
    [[ $(stat -c %a -- "$credentials") == 700 ]] || chmod 0700 -- "$credentials"
else
    install -d -m 0700 -- "$credentials"
fi
install_file 0644 "$repo/config/example.yaml" "$dest_etc/config.example.yaml" || true

if [[ -e $config ]]; then
    say "config: keeping existing $config"
else
    say "config: writing starter $config (edit the camera, then check-config)"
    tmp=$(mktemp)
    # The starter is a valid config whose one camera is disabled: check-config passes and
    # prints "0 enabled", and the service refuses to run (exit 2, no restart loop) until the
    # operator sets a real url and removes `enabled: false`.
    cat >"$tmp" <<EOF
# edge-facedet configuration (starter written by deploy/install.sh; never overwritten).
# Every option, with defaults and bounds: $etc/config.example.yaml
#
# To do: set the camera url below and remove \`enabled: false\`, then
#   $prefix/venv/bin/edge-facedet check-config --credentials-dir $etc/credentials $etc/config.yaml
#   systemctl restart edge-facedet
# Secrets: put each in its own file in $etc/credentials/ (chmod 0600). systemd loads every
# file there as a credential named edge-facedet_<FILENAME> (LoadCredential= of a directory
# prefixes the id), so credentials/mqtt-password is referred to as
#   password: {credential: edge-facedet_mqtt-password}

model:
  dir: $prefix/models
  device: AUTO              # CPU, GPU, NPU, AUTO:GPU,CPU ...

mqtt:
  host: 127.0.0.1
  port: 1883
  # username: edge-facedet
  # password: {credential: edge-facedet_mqtt-password}   # file $etc/credentials/mqtt-password
  home_assistant_discovery: false

metrics:
  host: 127.0.0.1           # loopback: scrape locally, or see README before exposing it
  port: 9108

defaults:
  detect_fps: 5
  publish: {policy: on_change, heartbeat_s: 10}

cameras:
  - id: camera-1
    name: First camera
    url: rtsp://192.0.2.10:554/stream1   # placeholder (TEST-NET address)
    # username: viewer
    # password: {credential: edge-facedet_camera-1}         # file $etc/credentials/camera-1
    enabled: false
EOF
    install -m 0644 -- "$tmp" "$config"
    rm -f -- "$tmp"
fi

# --- systemd unit ---------------------------------------------------------------------------
tmp=$(mktemp)
sed -e "s|/opt/edge-facedet|$prefix|g" -e "s|/etc/edge-facedet|$etc|g" \
    "$repo/systemd/edge-facedet.service" >"$tmp"
unit_changed=0
if install_file 0644 "$tmp" "$unit"; then
    unit_changed=1
    say "unit: installed $unit"
else
    say "unit: $unit up to date"
fi
rm -f -- "$tmp"

if ((systemd_live)); then
    if ((unit_changed)); then
        systemctl daemon-reload
    fi
    if ! systemctl is-enabled --quiet edge-facedet.service; then
        say "systemd: enabling edge-facedet (starts at boot)"
        systemctl enable edge-facedet.service
    fi
    if ((start)); then
        say "systemd: starting edge-facedet"
        systemctl restart edge-facedet.service
    fi
elif ((use_systemd)) && [[ -z $root ]]; then
    say "systemd is not running here: the unit is installed but not enabled"
fi

say "done: edge-facedet $version in $prefix"
printf '    check:  %s check-config --credentials-dir %s %s\n' "$prefix/venv/bin/edge-facedet" \
    "$etc/credentials" "$etc/config.yaml"
printf '    start:  systemctl start edge-facedet && journalctl -u edge-facedet -f\n'
