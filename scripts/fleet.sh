#!/usr/bin/env bash
# The main job: bring up the reference fleet (examples/reference/infra.yaml)
# on the built-in defaults, prove it works, and tear it down. Run as root on
# a Debian/Ubuntu machine.
#
# It installs what is missing, builds microvm and microvm-init, prepares a
# kernel and the base image, starts the daemon for a network namespace that
# stands in for the host ("microvm-host", with an uplink to a second
# namespace "microvm-inet" standing in for the internet), so the machine's
# own interfaces, routes and firewall are never touched; applies the
# reference file, waits for the fleet while showing progress, runs
# `microvm verify`, prints `microvm list`, and shuts everything down
# cleanly on exit or Ctrl-C (KEEP=1 leaves it running). QEMU uses KVM when
# /dev/kvm is usable and TCG otherwise.
#
# vm1's image is docker.io/wholelottahoopla/sandbox:latest. By default a
# local stand-in is imported under that name: a Debian root made from
# Debian's own packages by mmdebstrap, running Debian's nginx as its
# workload on 8080 (as the official nginx image runs it), so the job needs
# no registry; PULL=1 pulls the real image instead.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
. scripts/lib.sh
setup
FILE="${FILE:-examples/reference/infra.yaml}"
STATE_DIR="${STATE_DIR:-/var/lib/microvm}"
HOSTNS=microvm-host
INETNS=microvm-inet
SOCK="$STATE_DIR/run/microvm.sock"
LOGS="$STATE_DIR/fleet-logs"
SANDBOX=docker.io/wholelottahoopla/sandbox:latest
mkdir -p bin "$LOGS"
go build -o bin/microvm ./cmd/microvm
CGO_ENABLED=0 go build -ldflags="-s -w" -o bin/microvm-init ./cmd/microvm-init
kernel=$(bash scripts/fetch-kernel.sh) || { echo "fleet: no guest kernel (scripts/fetch-kernel.sh failed)" >&2; exit 1; }
echo "==> kernel: $kernel"
microvm() { bin/microvm --netns "/run/netns/$HOSTNS" --state-dir "$STATE_DIR" --socket "$SOCK" "$@"; }
t_setup=$((SECONDS - t0))

daemon_pid=
teardown() {
	set +e
	if [ -n "$daemon_pid" ]; then
		echo "==> stopping the fleet cleanly"
		stops=()
		for vm in $(microvm list -o json 2>/dev/null | sed -n 's/^    "name": "\(.*\)",$/\1/p'); do
			microvm stop "$vm" >/dev/null 2>&1 &
			stops+=("$!")
		done
		for p in "${stops[@]}"; do wait "$p"; done
		kill -TERM "$daemon_pid" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
	fi
	microvm net teardown >/dev/null 2>&1
	ip netns del "$HOSTNS" 2>/dev/null
	ip netns del "$INETNS" 2>/dev/null
}

echo "==> the stand-in host: namespace $HOSTNS, uplink to $INETNS (203.0.113.0/24)"
ip netns del "$HOSTNS" 2>/dev/null || true
ip netns del "$INETNS" 2>/dev/null || true
ip netns add "$HOSTNS"
ip netns add "$INETNS"
ip -n "$HOSTNS" link set lo up
ip -n "$INETNS" link set lo up
ip -n "$HOSTNS" link add uplink0 type veth peer name wan0 netns "$INETNS"
ip -n "$HOSTNS" addr add 203.0.113.1/24 dev uplink0
ip -n "$HOSTNS" link set uplink0 up
ip -n "$HOSTNS" route add default via 203.0.113.2
ip -n "$INETNS" addr add 203.0.113.2/24 dev wan0
ip -n "$INETNS" link set wan0 up
if [ "${KEEP:-0}" != 1 ]; then trap teardown EXIT; fi
trap 'exit 130' INT TERM

t1=$SECONDS
[ -d "$STATE_DIR/store/base" ] || bash scripts/build-base-image.sh "$STATE_DIR/store/base" >/dev/null
echo "==> base image: $STATE_DIR/store/base"
if [ "${PULL:-0}" = 1 ]; then
	echo "==> vm1's image: pulling $SANDBOX"
	microvm image pull "$SANDBOX"
else
	echo "==> vm1's image: a local stand-in for $SANDBOX (Debian's nginx on 8080; PULL=1 pulls the real one)"
	apt_install mmdebstrap
	site='server { listen 8080 default_server; root /var/www/html; index index.html index.nginx-debian.html; }'
	root=$(HOOK="echo '$site' > \"\$1/etc/nginx/sites-enabled/sandbox\"" bash scripts/build-debian-image.sh nginx-light)
	microvm image import "$SANDBOX" "$root" --entrypoint nginx,-g,"daemon off;" --stop-signal SIGQUIT
fi
t_image=$((SECONDS - t1))

echo "==> microvm validate -f $FILE"
microvm validate -f "$FILE"
echo "==> microvm plan -f $FILE"
microvm plan -f "$FILE"

t2=$SECONDS
echo "==> microvm daemon --config $FILE (log: $LOGS/daemon.log)"
rm -f "$SOCK"
bin/microvm --netns "/run/netns/$HOSTNS" --state-dir "$STATE_DIR" --socket "$SOCK" daemon --config "$FILE" >"$LOGS/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
total=$(microvm plan -f "$FILE" -o json | grep -c '^      "name": ' || true)
echo "==> waiting for $total VMs"
last=
deadline=$((SECONDS + 600))
while :; do
	states=$(microvm list -o json 2>/dev/null | sed -n 's/^    "state": "\(.*\)",$/\1/p' | sort | uniq -c | tr -s ' ' | tr '\n' ',' || true)
	running=$(microvm list -o json 2>/dev/null | grep -c '"state": "running"' || true)
	if [ "$states" != "$last" ]; then
		echo "    $((SECONDS - t2))s: $running/$total running (${states%,})"
		last=$states
	fi
	[ "$running" -ge "$total" ] && break
	if ! kill -0 "$daemon_pid" 2>/dev/null; then echo "the daemon exited; its log ($LOGS/daemon.log) ends:" >&2; tail -n 20 "$LOGS/daemon.log" >&2; exit 1; fi
	if [ $SECONDS -gt $deadline ]; then
		echo "the fleet is not up after 600 s; the daemon's log ($LOGS/daemon.log) ends:" >&2
		tail -n 20 "$LOGS/daemon.log" >&2
		microvm list >&2 || true
		exit 1
	fi
	sleep 2
done
t_boot=$((SECONDS - t2))

t3=$SECONDS
echo "==> microvm verify -f $FILE"
rc=0
microvm verify -f "$FILE" || rc=$?
t_verify=$((SECONDS - t3))
echo "==> microvm list"
microvm list
echo
echo "phases: setup ${t_setup}s, image ${t_image}s, boot ${t_boot}s, verify ${t_verify}s; total $((SECONDS - t0))s"
if [ "${KEEP:-0}" = 1 ]; then
	echo "KEEP=1: left running (daemon pid $daemon_pid). Use: bin/microvm --netns /run/netns/$HOSTNS --state-dir $STATE_DIR --socket $SOCK list"
fi
exit $rc
