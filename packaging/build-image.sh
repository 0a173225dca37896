#!/usr/bin/env bash
# Builds the regwatch container image from packaging/Dockerfile.
#   packaging/build-image.sh [-b BINARY] [-t TAG] [-o OCI_DIR]
# BINARY defaults to target/release/regwatch (built if missing); TAG to regwatch:<version>.
# The builder is docker, podman or buildah, the first one found (IMAGE_BUILDER=… chooses).
# -o also writes the image as an OCI layout (OCI_DIR, tagged with the version) for skopeo
# or umoci; podman and buildah only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
BIN=$ROOT/target/release/regwatch
TAG=regwatch:$VERSION
OCI=
while getopts "b:t:o:h" opt; do
  case $opt in
    b) BIN=$OPTARG ;;
    t) TAG=$OPTARG ;;
    o) OCI=$OPTARG ;;
    *) sed -n '2,7p' "$0"; exit 2 ;;
  esac
done
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi
BUILDER=${IMAGE_BUILDER:-}
if [ -z "$BUILDER" ]; then
  for b in docker podman buildah; do
    if command -v "$b" >/dev/null; then BUILDER=$b; break; fi
  done
fi
[ -n "$BUILDER" ] || { echo "build-image: no docker, podman or buildah (apt-get install -y buildah)" >&2; exit 1; }

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
R=$CTX/rootfs
install -D -m 0755 "$BIN" "$R/usr/bin/regwatch"
# The shared libraries at the paths the loader looks for them. glibc 2.34 and later has
# its NSS "files" and "dns" modules built in, so host names resolve without more.
ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
  while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$R$lib"
  done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$R/etc/regwatch"
printf 'root:x:0:0:root:/root:/sbin/nologin\nregwatch:x:65532:65532:regwatch:/var/lib/regwatch:/sbin/nologin\n' >"$R/etc/passwd"
printf 'root:x:0:\nregwatch:x:65532:\n' >"$R/etc/group"
printf 'hosts: files dns\n' >"$R/etc/nsswitch.conf"
install -d -m 1777 "$R/tmp"
install -d -m 0755 "$R/var/lib"
# The audit trail names people: its directory is the regwatch user's alone (the Dockerfile
# copies it with that owner; a volume mounted there starts out the same).
install -d -m 0700 "$CTX/state/regwatch"
cp "$ROOT/packaging/Dockerfile" "$CTX/Dockerfile"

case $BUILDER in
  docker | podman) "$BUILDER" build -t "$TAG" "$CTX" ;;
  buildah) buildah bud --isolation chroot -t "$TAG" "$CTX" ;;
  *) echo "build-image: unknown builder $BUILDER (docker, podman or buildah)" >&2; exit 1 ;;
esac
if [ -n "$OCI" ]; then
  case $BUILDER in
    podman | buildah) "$BUILDER" push "$TAG" "oci:$OCI:$VERSION" ;;
    *) echo "build-image: -o needs podman or buildah" >&2; exit 1 ;;
  esac
fi
echo "built $TAG with $BUILDER${OCI:+ (OCI layout: $OCI:$VERSION)}"
