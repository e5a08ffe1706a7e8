#!/usr/bin/env bash
# Build the "base" store image: a small root tree from Debian's busybox-static
# (a shell and the usual tools: vi, wget, top, ps, mount, ip…), reproducibly:
# every file gets a fixed timestamp, so two builds are byte-identical.
#
#   scripts/build-base-image.sh DIR      (e.g. /var/lib/microvm/store/base)
set -euo pipefail
dest="${1:?usage: build-base-image.sh DIR}"
bb=/bin/busybox
[ -x "$bb" ] && "$bb" --list-full >/dev/null 2>&1 || { echo "build-base-image: busybox-static is missing (apt-get install busybox-static)" >&2; exit 1; }
file -L "$bb" 2>/dev/null | grep -q "statically linked" || ldd "$bb" 2>&1 | grep -q "not a dynamic" || { echo "build-base-image: $bb is not static; install busybox-static" >&2; exit 1; }
tmp="$dest.building"
rm -rf "$tmp"
mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var,run,proc,sys,dev,mnt,home}
chmod 1777 "$tmp/tmp"
chmod 700 "$tmp/root"
install -m 0755 "$bb" "$tmp/bin/busybox"
"$bb" --list-full | while read -r applet; do
	[ "$applet" = bin/busybox ] && continue
	[ -e "$tmp/$applet" ] || ln -s /bin/busybox "$tmp/$applet"
done
cat > "$tmp/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$tmp/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
cat > "$tmp/etc/os-release" <<'O'
NAME="microvm base"
ID=microvm-base
PRETTY_NAME="microvm base (busybox)"
O
echo "export PS1='\\h:\\w\\$ '" > "$tmp/etc/profile"
find "$tmp" -exec touch -h -d @0 {} +
rm -rf "$dest"
mv "$tmp" "$dest"
echo "$dest"
