#!/usr/bin/env bash
# Builds edgebox_<version>_<arch>.deb with dpkg-deb from a static binary:
#   packaging/deb/build.sh <binary> <out-dir>
# Installs /usr/bin/edgebox, an `edgebox-<role>` link per role in /usr/bin,
# plain role-name links in /usr/lib/edgebox/bin (add it to PATH for
# busybox-style names without clashing with other packages), the systemd
# units, the default config (a conffile), the man page and completions.
set -euo pipefail
bin=$(realpath "$1")
out=$(realpath -m "$2")
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(grep -m1 '^version' "$here/../Cargo.toml" | cut -d'"' -f2)
case "$(file -L "$bin")" in
  *x86-64*) arch=amd64 ;;
  *aarch64*) arch=arm64 ;;
  *RISC-V*) arch=riscv64 ;;
  *) echo "deb: cannot tell the architecture of $bin" >&2; exit 1 ;;
esac
# The man page and completions come from the binary; run it natively or
# under qemu-user.
runner=""
[ "$arch" = arm64 ] && runner=qemu-aarch64-static
[ "$arch" = riscv64 ] && runner=qemu-riscv64-static
run() { ${runner:+$runner} "$bin" "$@"; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/usr/bin/edgebox"
mkdir -p "$root/usr/lib/edgebox/bin"
for role in $(run --list | awk '$1 ~ /^[a-z]/ && $0 !~ /^\(/ {print $1}'); do
  ln -s ../../../bin/edgebox "$root/usr/lib/edgebox/bin/$role"
  ln -s edgebox "$root/usr/bin/edgebox-$role"
done
install -D -m 0644 "$here/systemd/edgebox.service" "$root/lib/systemd/system/edgebox.service"
install -D -m 0644 "$here/systemd/edgebox@.service" "$root/lib/systemd/system/edgebox@.service"
install -D -m 0644 "$here/edgebox.toml" "$root/etc/edgebox/edgebox.toml"
mkdir -p "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
run man | gzip -9n > "$root/usr/share/man/man1/edgebox.1.gz"
run completions bash > "$root/usr/share/bash-completion/completions/edgebox"
run completions zsh > "$root/usr/share/zsh/vendor-completions/_edgebox"
run completions fish > "$root/usr/share/fish/vendor_completions.d/edgebox.fish"
mkdir -p "$root/DEBIAN"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: edgebox
Version: $version
Architecture: $arch
Maintainer: edgebox developers <dev@edgebox.invalid>
Installed-Size: $size
Section: admin
Priority: optional
Description: one static binary that turns a Linux device into a managed edge appliance
 edgebox bundles its roles (time-series database, orchestrator and agent,
 gateway, certificate rotation, change-data capture, mail filtering and more)
 in one static binary with one store, one config and one telemetry plane.
CONTROL
echo "/etc/edgebox/edgebox.toml" > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
mkdir -p /var/lib/edgebox
chmod 0700 /var/lib/edgebox
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POST
chmod 0755 "$root/DEBIAN/postinst"
mkdir -p "$out"
deb="$out/edgebox_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
