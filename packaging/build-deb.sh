#!/usr/bin/env bash
# Builds a Debian package of regwatch with Debian's own dpkg-deb (no extra tools):
#   packaging/build-deb.sh [BINARY] [OUTDIR]
# BINARY defaults to target/release/regwatch (built if missing); OUTDIR to target/debian.
# Installs /usr/bin/regwatch, the systemd unit, /etc/regwatch/regwatch.toml (a conffile:
# upgrades keep your edits), the dashboard and alert rules under /usr/share/regwatch, and
# creates the `regwatch` system user with a private /var/lib/regwatch.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/regwatch}
OUT=${2:-$ROOT/target/debian}
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
P="$STAGE/regwatch_${VERSION}_${ARCH}"

install -D -m 0755 "$BIN" "$P/usr/bin/regwatch"
install -D -m 0644 "$ROOT/packaging/regwatch.service" "$P/lib/systemd/system/regwatch.service"
install -D -m 0640 "$ROOT/packaging/regwatch.example.toml" "$P/etc/regwatch/regwatch.toml"
install -D -m 0644 "$ROOT/dashboards/regwatch.json" "$P/usr/share/regwatch/dashboards/regwatch.json"
install -D -m 0644 "$ROOT/alerts/regwatch.rules.yml" "$P/usr/share/regwatch/alerts/regwatch.rules.yml"
install -D -m 0644 "$ROOT/alerts/regwatch.rules.test.yml" "$P/usr/share/regwatch/alerts/regwatch.rules.test.yml"
install -D -m 0644 "$ROOT/README.md" "$P/usr/share/doc/regwatch/README.md"

mkdir -p "$P/DEBIAN"
SIZE=$(du -sk "$P" | cut -f1)
cat >"$P/DEBIAN/control" <<CONTROL
Package: regwatch
Version: $VERSION
Architecture: $ARCH
Maintainer: regwatch developers <regwatch@example.invalid>
Installed-Size: $SIZE
Depends: libc6, adduser
Suggests: docker-registry, nginx, prometheus, prometheus-alertmanager
Section: admin
Priority: optional
Homepage: https://example.invalid/regwatch
Description: container registry monitoring and tamper-evident audit trail
 regwatch watches private container registries (CNCF distribution, behind nginx):
 health, inventory with shared layers counted once, storage and reclaimable bytes,
 failed pulls and password guessing from the logs, and a hash-chained audit trail
 of who pushed, pulled or deleted what.
CONTROL
echo "/etc/regwatch/regwatch.toml" >"$P/DEBIAN/conffiles"
cat >"$P/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd regwatch >/dev/null; then
    adduser --system --group --home /var/lib/regwatch --no-create-home regwatch >/dev/null
  fi
  # The audit trail names people: only regwatch may read it.
  install -d -o regwatch -g regwatch -m 0700 /var/lib/regwatch
  chown root:regwatch /etc/regwatch /etc/regwatch/regwatch.toml
  chmod 0750 /etc/regwatch
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
  fi
fi
exit 0
POSTINST
chmod 0755 "$P/DEBIAN/postinst"
mkdir -p "$OUT"
# REGWATCH_DEB_FAST=1 trades size for speed (the tests package a 100 MB debug binary).
COMPRESS=(-Zxz)
[ "${REGWATCH_DEB_FAST:-0}" = 1 ] && COMPRESS=(-Zgzip -z1)
dpkg-deb --root-owner-group "${COMPRESS[@]}" --build "$P" "$OUT" >/dev/null
echo "$OUT/regwatch_${VERSION}_${ARCH}.deb"
