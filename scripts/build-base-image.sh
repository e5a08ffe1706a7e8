#!/usr/bin/env bash
# Build the "base" store image: a small root tree from Debian's busybox-static
# (a shell and the usual tools: vi, wget, top, ps, mount, ip…), reproducibly:
# every file gets a fixed timestamp, so two builds are byte-identical.
#
#   scripts/build-base-image.sh DIR [ARCH]   (e.g. /var/lib/microvm/store/base arm64)
#
# ARCH (Debian's name, default this machine's) other than the host's takes
# busybox-static for that architecture from Debian's archive.
set -euo pipefail
dest="${1:?usage: build-base-image.sh DIR [ARCH]}"
arch="${2:-$(dpkg --print-architecture)}"
bb=/bin/busybox
[ -x "$bb" ] && "$bb" --list-full >/dev/null 2>&1 || { echo "build-base-image: busybox-static is missing (apt-get install busybox-static)" >&2; exit 1; }
linkage=$(ldd "$bb" 2>&1 || true) # ldd exits 1 for static binaries
grep -qE "not a dynamic|statically linked" <<<"$linkage" || { echo "build-base-image: $bb is not static; install busybox-static" >&2; exit 1; }
tmp="$dest.building"
rm -rf "$tmp"
mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var,run,proc,sys,dev,mnt,home}
chmod 1777 "$tmp/tmp"
chmod 700 "$tmp/root"
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
	install -m 0755 "$bb" "$tmp/bin/busybox"
else
	dl=$(mktemp -d)
	dpkg --print-foreign-architectures | grep -qx "$arch" || { dpkg --add-architecture "$arch"; apt-get update -qq; }
	(cd "$dl" && apt-get download "busybox-static:$arch" >/dev/null 2>&1) || { echo "build-base-image: cannot download busybox-static:$arch" >&2; rm -rf "$dl"; exit 1; }
	dpkg-deb -x "$dl"/*.deb "$dl/x"
	install -m 0755 "$dl/x/bin/busybox" "$tmp/bin/busybox"
	rm -rf "$dl"
fi
# The applet list is the same for every architecture of one busybox version.
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
