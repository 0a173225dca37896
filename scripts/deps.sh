#!/usr/bin/env bash
# Installs the Debian packages regwatch's demo and tests use (only those still missing).
# The real registry (distribution 2.8), skopeo and umoci to push/pull images without a Docker
# engine, nginx + htpasswd for the proxy, aiosmtpd for mail, sqlite3 for tamper tests, and
# python3-jwt + python3-cryptography + openssl for the tests' token server (bearer auth),
# prometheus-alertmanager as the alerting tests' real Alertmanager, buildah (+ crun, its runtime,
# a Recommends that --no-install-recommends skips) to build the
# container image from packaging/Dockerfile.
set -euo pipefail

PACKAGES=(docker-registry skopeo umoci nginx apache2-utils python3 python3-aiosmtpd python3-jwt python3-cryptography openssl curl sqlite3 ca-certificates mtail prometheus prometheus-alertmanager buildah crun)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || {
  echo "deps: cargo not found: install Rust (https://rustup.rs, or 'apt-get install cargo' for Debian's)" >&2
  exit 1
}
