#!/bin/sh
# The users the rootless tests (cli/tests/rootless.rs) run mybuild as, made as root
# and idempotently: mbtest with subordinate ranges, mbsolo without any.
set -eu
id mbtest >/dev/null 2>&1 || useradd -m mbtest
grep -q '^mbtest:200000:65536$' /etc/subuid 2>/dev/null || usermod --add-subuids 200000-265535 mbtest
grep -q '^mbtest:200000:65536$' /etc/subgid 2>/dev/null || usermod --add-subgids 200000-265535 mbtest
id mbsolo >/dev/null 2>&1 || useradd -m -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 mbsolo
solo=$(id -u mbsolo)
for f in /etc/subuid /etc/subgid; do
    [ -f "$f" ] && sed -i "/^mbsolo:/d; /^$solo:/d" "$f"
done
# slirp4netns opens /dev/net/tun as the user: Debian's udev makes it 0666, a bare
# /dev may not.
if [ -c /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi
# fuse-overlayfs (the fallback when the kernel refuses overlay in a user namespace)
# opens /dev/fuse as the user: Debian ships it 0666, some machines 0600.
if [ -c /dev/fuse ]; then chmod 0666 /dev/fuse; fi
