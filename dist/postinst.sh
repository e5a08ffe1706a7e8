#!/bin/sh
# The group that may use microvm's API socket.
set -e
getent group microvm >/dev/null 2>&1 || groupadd --system microvm
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	systemctl enable microvm.service >/dev/null 2>&1 || true
	systemctl start microvm.service >/dev/null 2>&1 || true
fi
exit 0
