#!/bin/sh
# Stop the daemon (VMs are stopped cleanly first) on removal. Volumes,
# images and state under /var/lib/microvm are never removed by the package.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop microvm-guests.service microvm.service >/dev/null 2>&1 || true
	systemctl disable microvm-guests.service microvm.service >/dev/null 2>&1 || true
fi
exit 0
