#!/usr/bin/env bash
# The main job: bring up the reference fleet (examples/reference/infra.yaml)
# on the built-in defaults. Run as root on a Debian/Ubuntu machine.
#
# Everything happens inside a network namespace that stands in for the host
# ("microvm-host", with an uplink to a second namespace "microvm-inet"), so
# the machine's own interfaces, routes and firewall are never touched. QEMU
# uses KVM when /dev/kvm is usable and TCG otherwise.
#
# Today: install what is missing, build microvm and microvm-init, fetch the
# kernel, build the base image, validate the reference file, print the plan,
# apply the fleet's host network (bridges, TAPs, NAT, isolation), boot every
# VM whose image is in the store (vm1's OCI image needs the image store,
# which is not built yet), check each over SSH, print the fleet, and shut
# everything down cleanly (KEEP=1 leaves it running).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
setup
FILE="${FILE:-examples/reference/infra.yaml}"
STATE_DIR="${STATE_DIR:-/var/lib/microvm}"
HOSTNS=microvm-host
INETNS=microvm-inet
LOGS="$STATE_DIR/fleet-logs"
mkdir -p bin "$LOGS"
go build -o bin/microvm ./cmd/microvm
CGO_ENABLED=0 go build -ldflags="-s -w" -o bin/microvm-init ./cmd/microvm-init
echo "==> kernel: $(bash scripts/fetch-kernel.sh)"
[ -d "$STATE_DIR/store/base" ] || bash scripts/build-base-image.sh "$STATE_DIR/store/base" >/dev/null
echo "==> base image: $STATE_DIR/store/base"
microvm() { bin/microvm --netns "/run/netns/$HOSTNS" --state-dir "$STATE_DIR" --socket "$STATE_DIR/run/microvm.sock" "$@"; }
# For background use: exec, so $! is microvm itself and gets the signals.
microvm_bg() { exec bin/microvm --netns "/run/netns/$HOSTNS" --state-dir "$STATE_DIR" --socket "$STATE_DIR/run/microvm.sock" "$@"; }

pids=()
teardown() {
	# SIGTERM: background jobs of a script ignore SIGINT. `microvm run`
	# shuts its VM down cleanly on either.
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	microvm net teardown >/dev/null 2>&1 || true
	ip netns del "$HOSTNS" 2>/dev/null || true
	ip netns del "$INETNS" 2>/dev/null || true
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

echo "==> microvm validate -f $FILE"
microvm validate -f "$FILE"
echo "==> microvm plan -f $FILE"
microvm plan -f "$FILE"
echo "==> microvm net apply -f $FILE"
microvm net apply -f "$FILE" | tail -1

vms=$(microvm plan -f "$FILE" -o json | sed -n 's/^      "name": "\(.*\)",$/\1/p')
echo "==> booting: $(echo $vms)"
booting=()
for vm in $vms; do
	microvm_bg run "$vm" -f "$FILE" -q >"$LOGS/$vm.out" 2>"$LOGS/$vm.err" &
	pids+=("$!")
	booting+=("$vm")
done
ready=()
deadline=$((SECONDS + 300))
while [ ${#booting[@]} -gt 0 ] && [ $SECONDS -lt $deadline ]; do
	still=()
	for vm in "${booting[@]}"; do
		if grep -q " is ready: " "$LOGS/$vm.err"; then
			echo "    $vm: $(grep -o 'ready: .*)' "$LOGS/$vm.err")"
			ready+=("$vm")
		elif grep -q "^microvm: " "$LOGS/$vm.err"; then
			echo "    $vm: not started: $(grep '^microvm: ' "$LOGS/$vm.err" | head -1 | cut -c10-)"
		else
			still+=("$vm")
		fi
	done
	booting=("${still[@]}")
	sleep 1
done
for vm in "${booting[@]}"; do echo "    $vm: not ready after 300 s (see $LOGS/$vm.err)"; done

echo "==> checks over SSH"
key="$STATE_DIR/ssh/id_ed25519"
fail=0
for vm in "${ready[@]}"; do
	addr=$(grep -o 'root@[0-9.]*' "$LOGS/$vm.err" | head -1 | cut -d@ -f2)
	out=$(ip netns exec "$HOSTNS" ssh -i "$key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5 \
		"root@$addr" 'echo "$(hostname) $(nproc) vCPU, $(grep MemTotal /proc/meminfo | tr -s " " | cut -d" " -f2) kB, /var $(stat -f -c %T /var), $(grep -c " /mnt/storage ext4 " /proc/mounts) volume"' 2>&1) || fail=1
	echo "    $vm ($addr): $out"
done
echo
echo "$(( ${#ready[@]} )) VM(s) up in $HOSTNS; vm1 needs the image store (its image is an OCI reference)."
if [ "${KEEP:-0}" = 1 ]; then
	echo "KEEP=1: left running; stop with: kill ${pids[*]}; then ip netns del $HOSTNS $INETNS"
else
	echo "Shutting the fleet down cleanly."
fi
exit $fail
