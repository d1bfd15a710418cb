#!/usr/bin/env bash
# Runs the README's two commands on a really fresh Debian 12 (bookworm) and prints timings:
# a minbase chroot with only ca-certificates, git, python3 and python3-venv, the committed tree
# (git archive HEAD) as the clone, ../shared beside it (models, media, eval: read-only), and no
# broker reachable from the host. Needs root, debootstrap, slirp4netns and unshare.
#
#   bash deploy/fresh-debian-check.sh [--root DIR] [--keep] [--demo-seconds N]
#                                     [--offline-tests] [--worktree-file PATH]...
#
# Steps: 1. debootstrap; 2. `bash deploy/setup.sh` alone (the slow first run: apt, pip);
# 3. command 1, setup + the demo for N s (default 20), watched with the README's mosquitto_sub
# and curl lines, then SIGTERM; 4. command 2, setup + the whole suite. Steps 2-4 each run in
# their own mount, PID and network namespaces: nothing on the host's 127.0.0.1 answers (setup
# starts the chroot's own broker), and slirp4netns gives the internet, as a fresh machine has
# (--offline-tests: the suite gets loopback only). Every mount and process of a step ends with
# it. The chroot gets no host environment (env -i): no pip configuration, no PATH additions.
# --worktree-file PATH puts the working tree's PATH over the committed one (to try a change
# before committing it); --keep leaves the chroot (default /var/tmp/edge-facedet-fresh).
# Environment: MIRROR (Debian mirror, default http://deb.debian.org/debian), SHARED (default
# ../shared beside this repository). The host's CAs in /usr/local/share/ca-certificates (e.g. a
# TLS-intercepting proxy's) are added to the chroot's trust store, or pip cannot reach PyPI.
set -euo pipefail

usage() { sed -n '2,21s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

root=/var/tmp/edge-facedet-fresh
keep=0
demo_seconds=20
test_net=online
worktree_files=()
while (($#)); do
    case "$1" in
        --root) root=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --offline-tests) test_net=offline; shift ;;
        --demo-seconds) demo_seconds=$2; shift 2 ;;
        --worktree-file) worktree_files+=("$2"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'fresh-debian-check.sh: unknown option %s (see --help)\n' "$1" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${SHARED:-$(dirname "$repo")/shared}
mirror=${MIRROR:-http://deb.debian.org/debian}
[[ $EUID -eq 0 ]] || { echo "fresh-debian-check.sh: needs root (debootstrap, chroot, unshare)" >&2; exit 2; }
for tool in debootstrap slirp4netns unshare; do
    command -v $tool >/dev/null || { echo "fresh-debian-check.sh: $tool is missing (apt-get install $tool)" >&2; exit 2; }
done
for sub in models media eval; do
    [[ -d $shared/$sub ]] || { echo "fresh-debian-check.sh: $shared/$sub is missing" >&2; exit 2; }
done

# The clone and the shared folder beside it, as on a developer's machine.
clone=/srv/edge-facedet/repo
shared_in=/srv/edge-facedet/shared

t0=$SECONDS
stamp() { printf '[fresh %4ds] %s\n' "$((SECONDS - t0))" "$*"; }
timings=()
timed() { # timed LABEL COMMAND...: runs the command, records its duration and exit status
    local label=$1 start=$SECONDS rc=0
    shift
    stamp "start: $label"
    "$@" || rc=$?
    timings+=("$(printf '%-40s %5ds  exit %d' "$label" "$((SECONDS - start))" "$rc")")
    stamp "end:   $label (exit $rc, $((SECONDS - start)) s)"
    return "$rc"
}

cleanup() {
    # The mounts live in per-step mount namespaces; this only catches a step killed midway.
    local m
    awk -v r="$root" '$2 ~ "^"r"/" {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    if ((!keep)) && [[ -d $root ]]; then
        rm -rf --one-file-system "$root"
        rm -f "$root.debootstrap.log" "$root.slirp4netns.log"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that cleanup runs

# in_chroot NET SCRIPT: runs SCRIPT with bash in the chroot, in new mount, PID and network
# namespaces. The network namespace has its own loopback, so nothing of the host's 127.0.0.1
# answers; with NET "online" slirp4netns also gives it the internet (user-mode NAT, the host's
# loopback refused), as a fresh machine has; with "offline" it has loopback only.
in_chroot() {
    local net=$1 script=$2 unshare_pid slirp_pid="" rc=0
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --pid --fork --net --propagation private bash -euc '
        root=$1 shared=$2 shared_in=$3 net=$4 script=$5
        mount --rbind /dev "$root/dev"
        mount -t proc proc "$root/proc"
        mount -t sysfs sysfs "$root/sys" 2>/dev/null || mount --rbind /sys "$root/sys"
        mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
        for sub in models media eval; do
            mkdir -p "$root$shared_in/$sub"
            mount --bind "$shared/$sub" "$root$shared_in/$sub"
            mount -o remount,bind,ro "$root$shared_in/$sub"
        done
        ip link set lo up
        if [[ $net == online ]]; then
            for _ in $(seq 100); do
                ip -4 addr show tap0 2>/dev/null | grep -q inet && break
                sleep 0.1
            done
            ip -4 addr show tap0 2>/dev/null | grep -q inet \
                || { echo "fresh: slirp4netns gave no network" >&2; exit 1; }
        fi
        # Not exec: this shell stays PID 1 of the namespace and reaps orphaned processes.
        chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI=true \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            /bin/bash -euo pipefail -c "$script"
    ' in_chroot "$root" "$shared" "$shared_in" "$net" "$script" &
    unshare_pid=$!
    if [[ $net == online ]]; then
        # Until unshare has made the namespace, its PID is still in the host's: wait for it,
        # or slirp4netns would add its interface to the host.
        for _ in $(seq 100); do
            [[ "$(readlink "/proc/$unshare_pid/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ]] \
                && break
            sleep 0.05
        done
        [[ "$(readlink "/proc/$unshare_pid/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ]] \
            || { echo "fresh: unshare made no network namespace" >&2; wait "$unshare_pid"; return 1; }
        slirp4netns --configure --mtu=65520 --disable-host-loopback "$unshare_pid" tap0 \
            >>"$root.slirp4netns.log" 2>&1 &
        slirp_pid=$!
    fi
    wait "$unshare_pid" || rc=$?
    if [[ -n $slirp_pid ]]; then
        kill "$slirp_pid" 2>/dev/null || true
        wait "$slirp_pid" 2>/dev/null || true
    fi
    return "$rc"
}

# --- 1. the fresh system --------------------------------------------------------------------
build_chroot() {
    rm -rf --one-file-system "$root"
    mkdir -p "$root"
    debootstrap --variant=minbase --include=ca-certificates,git,python3,python3-venv \
        bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 \
        || { tail -20 "$root.debootstrap.log" >&2; return 1; }
    # What the Debian installer writes and debootstrap does not: without /etc/hosts, "localhost"
    # does not resolve. slirp4netns answers DNS on 10.0.2.3.
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    echo 'nameserver 10.0.2.3' >"$root/etc/resolv.conf"
    local ca
    for ca in /usr/local/share/ca-certificates/*.crt; do
        [[ -f $ca ]] || continue
        stamp "adding the host's CA $(basename "$ca") to the chroot's trust store"
        cp "$ca" "$root/usr/local/share/ca-certificates/"
    done
    chroot "$root" update-ca-certificates >/dev/null
    mkdir -p "$root$clone" "$root$shared_in"
    git -C "$repo" archive HEAD | tar -x -C "$root$clone"
    local file
    for file in "${worktree_files[@]}"; do
        stamp "working tree's $file over the committed one"
        mkdir -p "$(dirname "$root$clone/$file")"
        cp "$repo/$file" "$root$clone/$file"
    done
}
timed "debootstrap bookworm minbase + copy" build_chroot
stamp "chroot: $(du -sh --one-file-system "$root" | cut -f1), commit $(git -C "$repo" rev-parse --short HEAD)"
# shellcheck disable=SC2016 # expanded in the chroot
stamp "tools absent on the fresh system: $(chroot "$root" bash -c \
    'for t in man curl wget mosquitto mosquitto_sub ffmpeg gst-launch-1.0 shellcheck systemd-analyze promtool; do
         command -v $t >/dev/null || printf "%s " $t; done')"

# Every step starts here: proof that no broker from the host answers inside the namespace.
no_broker="if timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/1883' 2>/dev/null; then
    echo 'fresh: something answers on 127.0.0.1:1883 before setup.sh ran' >&2; exit 1
fi
echo 'fresh: own network namespace, nothing on 127.0.0.1:1883 before setup.sh'
"

# --- 2. setup alone, the first time (apt and pip reach their registries) ---------------------
timed "setup.sh, first run" in_chroot online "$no_broker cd $clone && bash deploy/setup.sh"

# --- 3. command 1: setup + the demo for a while, watched as the README says ------------------
demo_script="$no_broker
cd $clone
bash deploy/setup.sh
.venv/bin/edge-facedet run --config config/demo.yaml >/tmp/demo.log 2>&1 &
demo=\$!
timeout $((demo_seconds - 2)) mosquitto_sub -h 127.0.0.1 -t 'edge-facedet/demo/#' -v >/tmp/sub.log 2>&1 || true
metrics=\$(curl -s 127.0.0.1:9108/metrics | grep '^edge_facedet_frames_inferred_total' || true)
kill -TERM \$demo
rc=0; wait \$demo || rc=\$?
echo \"demo: exit \$rc after SIGTERM; \$(wc -l </tmp/sub.log) MQTT messages in $((demo_seconds - 2)) s\"
echo \"demo: metrics: \${metrics:-none}\"
echo 'demo: last log lines:'; tail -5 /tmp/demo.log
[[ \$rc -eq 0 && -s /tmp/sub.log && -n \$metrics ]]"
demo_rc=0
timed "command 1: setup + demo" in_chroot online "$demo_script" || demo_rc=$?

# --- 4. command 2: setup + the whole suite ------------------------------------------------------
test_rc=0
timed "command 2: setup + pytest ($test_net)" in_chroot "$test_net" \
    "$no_broker cd $clone && bash deploy/setup.sh && .venv/bin/python -m pytest -q -n 2 -p no:cacheprovider -rfEs" \
    || test_rc=$?

printf '\n== timings ==\n'
printf '%s\n' "${timings[@]}"
printf 'total %ds; demo %s, tests %s\n' "$((SECONDS - t0))" \
    "$( ((demo_rc == 0)) && echo ok || echo FAILED)" "$( ((test_rc == 0)) && echo ok || echo FAILED)"
((demo_rc == 0 && test_rc == 0))
