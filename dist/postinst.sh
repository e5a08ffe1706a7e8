#!/bin/sh
# The group that may use microvm's API socket.
set -e
getent group microvm >/dev/null 2>&1 || groupadd --system microvm
# The user hypervisors run as: no capabilities, not in the API group.
id -u microvm >/dev/null 2>&1 ||
	useradd --system --gid nogroup --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin microvm
# Each VM's hypervisor runs as an id of its own from this range.
if ! grep -qs '^microvm:' /etc/subuid || ! grep -qs '^microvm:' /etc/subgid; then
	usermod --add-subuids 1879048192-1879113727 --add-subgids 1879048192-1879113727 microvm || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	systemctl enable microvm.service microvm-guests.service >/dev/null 2>&1 || true
	systemctl start microvm.service microvm-guests.service >/dev/null 2>&1 || true
fi
exit 0
