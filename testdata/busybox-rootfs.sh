#!/bin/sh
# Writes a busybox rootfs tarball to stdout, made from Debian's busybox-static.
# Usage: testdata/busybox-rootfs.sh | mybuild import - busybox -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]'
set -eu
bb=/bin/busybox
[ -x "$bb" ] || bb=/usr/bin/busybox
[ -x "$bb" ] || { echo "busybox-static is not installed (apt-get install busybox-static)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/var" "$dir/usr/bin"
chmod 1777 "$dir/tmp"
cp "$bb" "$dir/bin/busybox"
# Relative links, so they resolve inside the image rather than to the host's busybox.
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$dir/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$dir/etc/group"
tar -C "$dir" --numeric-owner --owner=0 --group=0 -cf - .
