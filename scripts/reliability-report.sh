#!/usr/bin/env bash
# Run the fault and bad-input tests with reporting on and render
# docs/reliability.md from what they found (as root; the end-to-end faults
# boot VMs under QEMU).
#   bash scripts/reliability-report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
report=$(mktemp)
trap 'rm -f "$report"' EXIT
export MICROVM_RELIABILITY_REPORT="$report"
go test -count=1 -run 'TestWriteInterruptedByKill|TestFullDisk|TestCorrupt|TestHostileLayers|TestInterruptedPullResumes|TestDamagedCachedBlob|TestApplyRefusesUndecryptableSecrets|TestEgressPolicy|TestStalledBootRestarts' \
	./internal/state ./internal/volume ./internal/daemon ./internal/generation ./internal/store ./internal/network ./internal/supervisor >&2
go test -count=1 -timeout 30m -run 'TestFaults|TestUplinkLoss|TestDeployKills|TestUnprivilegedHypervisor|TestSecretsReachOnlyTheirVM|TestHostShutdownPath|TestSaveAndResume|TestOneIdentityPerVM|TestImageProblemsRefused' ./e2e >&2
fuzz=()
for target in "FuzzParse ./internal/config" "FuzzParseSpec ./internal/guest" "FuzzAPIRequest ./internal/apiserver"; do
	set -- $target
	out=$(go test -run '^$' -fuzz "^$1\$" -fuzztime "${FUZZTIME:-30s}" "$2" 2>&1 | tee /dev/stderr)
	execs=$(grep -o 'execs: [0-9]*' <<<"$out" | tail -1 | cut -d' ' -f2)
	status=$(tail -1 <<<"$out" | cut -c1-2)
	fuzz+=("| $1 ($2) | ${execs:-?} inputs in ${FUZZTIME:-30s} | $([ "$status" = ok ] && echo 'no panic, every invariant held' || echo FAILED) |")
done
{
	cat <<'H'
# Reliability

Produced by `bash scripts/reliability-report.sh` from the tests' own
findings (each fault test reports what it tried and found through
`testutil.Report`). "Lost VMs" counts VMs not running on the file's spec
after the fault; "lost bytes" compares a checksum of data written and synced
to a data volume before the fault; "converge" is the slowest time from the
fault to the fleet back on the file's spec.

H
	echo "Run: $(date -u +%Y-%m-%d), $(nproc) CPUs, $(uname -r), KVM: $({ [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } && echo yes || echo no, TCG)."
	echo
	echo "| fault or bad input | trials | lost VMs | lost bytes | converge | result | test |"
	echo "|---|---|---|---|---|---|---|"
	python3 - "$report" <<'P'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    conv = "%.1f s" % r["convergeSeconds"] if r.get("convergeSeconds") else "-"
    print("| %s | %d | %d | %d | %s | %s | %s |" % (r["fault"], r["trials"], r["lostVMs"], r["lostBytes"], conv, r["result"], r["test"]))
P
	echo
	echo "## Fuzzing"
	echo
	echo "| target | inputs | result |"
	echo "|---|---|---|"
	printf '%s\n' "${fuzz[@]}"
	echo
	cat <<'T'
Each target's seed corpus is committed under its package's
`testdata/fuzz/`, and CI runs every target for a bounded time
(scripts/test.sh, FUZZTIME).

## Least privilege and secrets

Hypervisors run as the `microvm` user through `setpriv`: no capabilities
(a 9p store keeps CAP_DAC_READ_SEARCH alone, to read an image's root-only
files), an empty bounding set, no_new_privs, no supplementary groups but
/dev/kvm's, QEMU's seccomp sandbox; the TAP is opened by the daemon and
handed over, so the hypervisor needs neither /dev/net/tun nor
CAP_NET_ADMIN. virtiofsd stays root inside its own namespace sandbox.
Every hypervisor runs as the same user: one VM's compromised hypervisor
is not kept from another VM's volume by file permissions (see
docs/security.md).
T
} > docs/reliability.md
echo "docs/reliability.md written" >&2
