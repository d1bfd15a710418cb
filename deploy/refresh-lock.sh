#!/usr/bin/env bash
# Re-resolve the lock files from pyproject.toml: requirements.lock (what the service needs:
# deploy/install.sh and the Dockerfile install it) and requirements-test.lock (that plus the
# test extra: deploy/setup.sh installs it). Run after changing a dependency in pyproject.toml,
# or to take newer releases; commit the result with the change and run the tests on it.
#
#   bash deploy/refresh-lock.sh                 # keep every pin pyproject.toml still allows
#   bash deploy/refresh-lock.sh --upgrade       # newest releases within pyproject.toml's bounds
#   bash deploy/refresh-lock.sh --upgrade-package aiomqtt
#
# Extra arguments go to `uv pip compile` as they are.
#
# One universal resolution with sha256 hashes for every file of every pinned release, valid for
# Python 3.10 and newer on Linux x86_64 and aarch64 (glibc 2.35+ there: OpenVINO's wheel), and
# any other platform the pinned releases have wheels for.
# The test lock is constrained by the runtime lock, so both pin the same runtime versions.
# Needs uv on PATH (or UV=/path/to/uv); without one it installs uv into a temporary venv.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

uv=${UV:-uv}
if ! command -v "$uv" >/dev/null; then
    scratch=$(mktemp -d)
    trap 'rm -rf -- "$scratch"' EXIT
    printf '==> no uv on PATH: installing it into %s\n' "$scratch"
    python3 -m venv "$scratch/venv"
    "$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
    uv=$scratch/venv/bin/uv
fi

# The header uv writes names this script as the command that made the file.
compile=("$uv" pip compile --quiet --universal --generate-hashes --python-version 3.10
    --custom-compile-command "bash deploy/refresh-lock.sh" "$@" pyproject.toml)
"${compile[@]}" -o deploy/requirements.lock
"${compile[@]}" --extra test -c deploy/requirements.lock -o deploy/requirements-test.lock
printf '==> wrote deploy/requirements.lock and deploy/requirements-test.lock\n'
grep -E '^(aiomqtt|paho-mqtt|numpy|opencv-python-headless|openvino)==' deploy/requirements.lock
