#!/usr/bin/env bash
# The one set-up command for edge-facedet on a fresh Debian/Ubuntu machine:
# system packages, a local MQTT broker, the project venv, the model and the demo media.
# Idempotent: a second run only checks and is fast.
#
#   bash deploy/setup.sh [--no-system-packages]
#
# Environment: EDGE_FACEDET_MODEL_MIRROR / EDGE_FACEDET_MEDIA_MIRROR (offline mirror folders,
# default ../shared/models and ../shared/media next to the repo), PYTHON (interpreter for the
# venv, default python3), CI=true (no colours).
set -euo pipefail

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

system_packages=1
for arg in "$@"; do
    case "$arg" in
        --no-system-packages) system_packages=0 ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'setup.sh: unknown option %s (see --help)\n' "$arg" >&2; exit 2 ;;
    esac
done

if [[ -t 1 && "${CI:-}" != "true" && -z "${NO_COLOR:-}" ]]; then
    bold=$'\e[1m' red=$'\e[31m' yellow=$'\e[33m' reset=$'\e[0m'
else
    bold='' red='' yellow='' reset=''
fi
say() { printf '%s==>%s %s\n' "$bold" "$reset" "$*"; }
warn() { printf '%swarning:%s %s\n' "$yellow" "$reset" "$*" >&2; }
die() { printf '%serror:%s %s\n' "$red" "$reset" "$*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# --- Python interpreter ---------------------------------------------------------------------
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; }
if [[ -n "${PYTHON:-}" ]] && ! python_ok "$PYTHON"; then
    die "PYTHON=$PYTHON is not a working Python >= 3.10"
fi
python=""
for candidate in "${PYTHON:-python3}" python3.13 python3.12 python3.11 python3.10; do
    if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
        python=$(command -v "$candidate")
        break
    fi
done
[[ -n "$python" ]] || die "no Python >= 3.10 found (tried \$PYTHON, python3, python3.10-3.13)"

# --- System packages ------------------------------------------------------------------------
# promtool and the prometheus server are used by the tests; GStreamer's RTSP server simulates
# cameras; ffmpeg re-encodes test clips; shellcheck lints the installer in the tests;
# systemd-analyze (package systemd; nothing is booted) verifies the unit in the tests;
# mosquitto_sub and curl are how the README watches the demo (a minimal Debian has no curl);
# chromium and chromium-driver load the web page headless in the tests (Selenium drives them).
wanted=(mosquitto mosquitto-clients ffmpeg gir1.2-gst-rtsp-server-1.0 python3-gi
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-tools prometheus shellcheck systemd curl chromium chromium-driver)
# Debian splits ensurepip out of python3; without it `python3 -m venv` fails.
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    wanted+=(python3-venv)
fi

if ((system_packages)); then
    missing=()
    if command -v dpkg >/dev/null; then
        for pkg in "${wanted[@]}"; do
            dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
        done
    else
        missing=("${wanted[@]}")
    fi
    if ((${#missing[@]} == 0)); then
        say "system packages: all present"
    elif [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing system packages: ${missing[*]}"
        # Keep the Debian prometheus/mosquitto services from starting during the install (this
        # script starts the broker itself); only if no policy is in place already.
        policy=/usr/sbin/policy-rc.d
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || die "apt-get update failed (see the messages above)"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            || die "apt-get install failed; the packages needed are: ${missing[*]}"
        if [[ -n "$(trap -p EXIT)" ]]; then
            rm -f "$policy"
            trap - EXIT
        fi
    else
        warn "not root or no apt-get; install these packages, then run this script again:"
        warn "  sudo apt-get install -y ${missing[*]}"
    fi
else
    say "system packages: skipped (--no-system-packages)"
fi

# --- MQTT broker on 127.0.0.1:1883 --------------------------------------------------------------
broker_up() { timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/1883' 2>/dev/null; }
if broker_up; then
    say "MQTT broker: listening on 127.0.0.1:1883"
elif ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
    warn "MQTT broker: nothing on 127.0.0.1:1883 and mosquitto is not installed; tests that"
    warn "  publish will fail until a broker listens there"
else
    mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    if [[ -d /run/systemd/system && $EUID -eq 0 ]]; then
        say "MQTT broker: systemctl start mosquitto"
        systemctl start mosquitto
    elif [[ $EUID -eq 0 && -r /etc/mosquitto/mosquitto.conf ]]; then
        say "MQTT broker: starting $mosquitto_bin -d -c /etc/mosquitto/mosquitto.conf"
        # The Debian config writes its pid file here; without systemd nobody creates it.
        install -d -o mosquitto -g mosquitto /run/mosquitto 2>/dev/null || true
        "$mosquitto_bin" -d -c /etc/mosquitto/mosquitto.conf
    else
        # Without a config file mosquitto 2 listens on localhost:1883 only ("local only mode").
        say "MQTT broker: starting $mosquitto_bin -d (local only, port 1883)"
        "$mosquitto_bin" -d -p 1883
    fi
    for _ in $(seq 50); do
        broker_up && break
        sleep 0.2
    done
    broker_up || die "MQTT broker: started mosquitto, but nothing accepts on 127.0.0.1:1883 after 10 s"
    say "MQTT broker: listening on 127.0.0.1:1883"
fi

# --- Project venv -------------------------------------------------------------------------------
venv="$repo/.venv"
if [[ -x $venv/bin/python ]] && python_ok "$venv/bin/python"; then
    say "venv: $venv ($("$venv/bin/python" -V 2>&1))"
else
    [[ -e $venv ]] && warn "venv: $venv is broken or too old; recreating it"
    say "venv: creating $venv with $python ($("$python" -V 2>&1))"
    "$python" -m venv --clear "$venv" \
        || die "venv: '$python -m venv' failed; install python3-venv (apt-get install python3-venv)"
fi

# Exact versions from the lock (sha256-checked), then the project itself, editable and without
# dependency resolution, so two machines set up a week apart get the same packages. The stamp
# records what was installed: pip runs again only when the lock, pyproject.toml or the
# interpreter changes, or the package stopped importing (e.g. the venv was edited by hand).
lock=deploy/requirements-test.lock
[[ -f $lock ]] || die "python packages: $lock is missing (bash deploy/refresh-lock.sh writes it)"
stamp="$venv/.edge-facedet-setup.stamp"
want_stamp=$( (cat "$lock" pyproject.toml; "$venv/bin/python" -V) 2>&1 | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$want_stamp" ]] \
    && "$venv/bin/python" -c 'import edge_facedet' 2>/dev/null \
    && [[ -x $venv/bin/edge-facedet ]]; then
    say "python packages: up to date ($lock and pyproject.toml unchanged)"
else
    say "python packages: pip install --require-hashes -r $lock (a few minutes on a fresh machine)"
    rm -f "$stamp"
    pip=("$venv/bin/python" -m pip install -qq --disable-pip-version-check --no-input)
    # -qq hides pip's warnings and progress; its errors still print.
    "${pip[@]}" --require-hashes -r "$lock" \
        || die "python packages: pip install -r $lock failed (see the messages above)"
    "${pip[@]}" --no-deps -e . \
        || die "python packages: pip install -e . failed (see the messages above)"
    if ! conflicts=$("$venv/bin/python" -m pip check 2>&1); then
        printf '%s\n' "$conflicts" >&2
        die "python packages: pip check found conflicts (see above)"
    fi
    printf '%s\n' "$want_stamp" >"$stamp"
fi

# --- Model and demo media -------------------------------------------------------------------
cli="$venv/bin/edge-facedet"
shared="$(dirname "$repo")/shared"

model_mirror=${EDGE_FACEDET_MODEL_MIRROR:-$shared/models}
model_source=()
if [[ -d $model_mirror ]]; then
    model_source=(--mirror "$model_mirror")
    say "model: FP16-INT8 and FP16 in .models (from mirror $model_mirror)"
else
    [[ -n "${EDGE_FACEDET_MODEL_MIRROR:-}" ]] \
        && die "model: EDGE_FACEDET_MODEL_MIRROR=$model_mirror is not a folder"
    say "model: FP16-INT8 and FP16 in .models (from Open Model Zoo downloads)"
fi
for precision in FP16-INT8 FP16; do
    "$cli" model fetch --precision "$precision" "${model_source[@]}" --dest .models \
        || die "model: fetching $precision failed (see the message above)"
done

media_mirror=${EDGE_FACEDET_MEDIA_MIRROR:-$shared/media}
media_source=()
if [[ -d $media_mirror ]]; then
    media_source=(--mirror "$media_mirror")
    say "demo media: clips in .media (from mirror $media_mirror)"
else
    [[ -n "${EDGE_FACEDET_MEDIA_MIRROR:-}" ]] \
        && die "demo media: EDGE_FACEDET_MEDIA_MIRROR=$media_mirror is not a folder"
    say "demo media: clips in .media (from the Intel sample-videos repository)"
fi
"$cli" media fetch "${media_source[@]}" --dest .media \
    || die "demo media: fetch failed (see the message above)"

say "set-up complete. Run the demo with:"
printf '    .venv/bin/edge-facedet run --config config/demo.yaml\n'
