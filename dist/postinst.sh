#!/bin/sh
# The group that may use microvm's API socket.
set -e
getent group microvm >/dev/null 2>&1 || groupadd --system microvm
# The user hypervisors run as: no capabilities, not in the API group.
id -u microvm >/dev/null 2>&1 ||
	useradd --system --gid nogroup --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin microvm
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	systemctl enable microvm.service microvm-guests.service >/dev/null 2>&1 || true
	systemctl start microvm.service microvm-guests.service >/dev/null 2>&1 || true
fi
exit 0
