#!/usr/bin/env bash
# The main job on one machine: a real docker-registry behind nginx, regwatch watching it, a
# little traffic (pushes, pulls, a wrong password), and where to look.
#
#   scripts/demo.sh          install what is missing, build, start everything, send traffic
#   scripts/demo.sh down     stop what the demo started
#
# Everything lives in $REGWATCH_DEMO_DIR (default /tmp/regwatch-demo); only 127.0.0.1 is used:
# registry :5000 (metrics :5001), nginx :5080, regwatch :10708. Users: alice/alice-pass (push),
# bob/bob-pass (read-only through nginx). These are throwaway demo credentials.
# REGWATCH_BIN=path uses that regwatch binary instead of building a release one;
# DEMO_REGISTRY_PORT, DEMO_DEBUG_PORT, DEMO_NGINX_PORT and DEMO_REGWATCH_PORT move the ports.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${REGWATCH_DEMO_DIR:-/tmp/regwatch-demo}
REG_PORT=${DEMO_REGISTRY_PORT:-5000} DEBUG_PORT=${DEMO_DEBUG_PORT:-5001}
NGINX_PORT=${DEMO_NGINX_PORT:-5080} RW_PORT=${DEMO_REGWATCH_PORT:-10708}

say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 100); do busy "$1" && return 0; sleep 0.1; done; die "$2 did not start; see $DIR/logs/"; }
# Waits until the audit API has at least N events matching QUERY (notifications and log lines
# arrive asynchronously), at most 20 s.
wait_audit() { # QUERY N
  local tok; tok=$(cat "$DIR/secrets/api-token")
  for _ in $(seq 100); do
    [ "$(curl -sf -H "Authorization: Bearer $tok" "http://127.0.0.1:$RW_PORT/api/v1/audit?$1&limit=$2" |
      grep -o '"id":' | wc -l)" -ge "$2" ] && return 0
    sleep 0.2
  done
  say "the audit trail still lacks $2 event(s) matching $1 after 20 s; see $DIR/logs/"
}

# Waits until regwatch has read every line of the log file NAME (at most 20 s).
wait_log() { # NAME FILE
  for _ in $(seq 100); do
    [ "$(curl -s "http://127.0.0.1:$RW_PORT/metrics" | sed -n "s/^regwatch_log_lines_total{log=\"$1\"} //p")" = "$(wc -l <"$2")" ] && return 0
    sleep 0.2
  done
  say "regwatch has not read all of $2 after 20 s; see $DIR/logs/"
}

start() { # name cmd...
  local name=$1; shift
  nohup "$@" </dev/null >>"$DIR/logs/$name.out" 2>>"$DIR/logs/$name.err" &
  echo $! >"$DIR/run/$name.pid"
}

down() {
  for name in regwatch nginx registry; do
    f="$DIR/run/$name.pid"
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null && say "stopped $name" || true
    rm -f "$f"
  done
}

if [ "${1:-up}" = down ]; then down; exit 0; fi

bash "$ROOT/scripts/deps.sh"
if [ -n "${REGWATCH_BIN:-}" ]; then
  RW=$REGWATCH_BIN   # e.g. the tests' debug build
else
  say "building regwatch (release)"
  (cd "$ROOT" && cargo build --release --quiet)
  RW="$ROOT/target/release/regwatch"
fi

[ -n "$(ls "$DIR"/run/*.pid 2>/dev/null)" ] && down
for p in $REG_PORT $DEBUG_PORT $NGINX_PORT $RW_PORT; do busy "$p" && die "port 127.0.0.1:$p is in use"; done
rm -rf "$DIR"; mkdir -p "$DIR"/{run,logs,storage,auth,tmp,oci,pull,secrets,reports}
chmod 755 "$DIR" "$DIR/logs" "$DIR/auth" "$DIR/tmp"   # nginx workers (nobody) read these

{ htpasswd -Bbn alice alice-pass; htpasswd -Bbn bob bob-pass; } | grep -v '^$' >"$DIR/auth/htpasswd"
chmod 644 "$DIR/auth/htpasswd"
# Secrets live in files only their owner can read; the configs name the files.
umask 077
printf 'alice-pass\n' >"$DIR/secrets/registry-password"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secrets/api-token"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secrets/notify-token"
umask 022
# The registry sends its notifications (push, pull, delete with the user) to regwatch.
{ sed -e "s#@FORMAT@#json#; s#@STORAGE@#$DIR/storage#; s#@PORT@#$REG_PORT#; s#@DEBUG_PORT@#$DEBUG_PORT#; s#@HTPASSWD@#$DIR/auth/htpasswd#" \
    "$ROOT/scripts/env/registry.yml.in"
  cat <<YAML
notifications:
  events:
    includereferences: true
  endpoints:
    - name: regwatch
      url: http://127.0.0.1:$RW_PORT/notifications
      headers:
        Authorization: [Bearer $(cat "$DIR/secrets/notify-token")]
      timeout: 2s
      threshold: 3
      backoff: 1s
YAML
} >"$DIR/registry.yml"
chmod 600 "$DIR/registry.yml"
sed -e "s#@DIR@#$DIR#g; s#@PORT@#$NGINX_PORT#; s#@UPSTREAM@#127.0.0.1:$REG_PORT#; s#@HTPASSWD@#$DIR/auth/htpasswd#" \
  "$ROOT/scripts/env/nginx.conf.in" >"$DIR/nginx.conf"

cat >"$DIR/regwatch.toml" <<TOML
[server]
listen = "127.0.0.1:$RW_PORT"
api_token_file = "secrets/api-token"

[database]
path = "regwatch.db"
retention = "400d"

[[registry]]
name = "demo"
url = "http://127.0.0.1:$NGINX_PORT"
username = "alice"
password_file = "secrets/registry-password"
poll_interval = "30s"
storage_root = "storage"
notifications_token_file = "secrets/notify-token"

# nginx's access log: pulls, failed pulls and failed logins (the wrong passwords below).
[[log]]
name = "nginx-access"
registry = "demo"
path = "logs/access.log"
format = "nginx_combined"
start_at = "beginning"

# nginx's error log says why a login failed; each failed login still counts once.
[[log]]
name = "nginx-error"
registry = "demo"
path = "logs/error.log"
format = "nginx_error"
start_at = "beginning"

# The weekly audit report for compliance (HTML), every Monday at 06:00 UTC.
[[report]]
name = "weekly-audit"
schedule = "0 6 * * MON"
format = "html"
output = "reports/{name}-{date}.html"
TOML

say "starting docker-registry, nginx and regwatch"
# Without AWS_CA_BUNDLE, which some machines set and Debian's docker-registry panics on
# at start when it uses the S3 driver (the demo's is local; the tests do the same).
start registry env -u AWS_CA_BUNDLE docker-registry serve "$DIR/registry.yml"
wait_port $REG_PORT docker-registry
start nginx nginx -p "$DIR/" -e "$DIR/logs/nginx-error.log" -c "$DIR/nginx.conf"
wait_port $NGINX_PORT nginx
"$RW" check --config "$DIR/regwatch.toml"
start regwatch "$RW" run --config "$DIR/regwatch.toml"
wait_port $RW_PORT regwatch

say "building two small images with umoci and pushing them through nginx with skopeo"
L="$DIR/oci/layout"
umoci init --layout "$L"
umoci new --image "$L:app"
head -c 65536 /dev/urandom >"$DIR/oci/app.bin"
umoci insert --image "$L:app" "$DIR/oci/app.bin" /app/app.bin
umoci config --image "$L:app" --os linux --architecture amd64
for tag in 1.0 1.1; do
  skopeo --insecure-policy copy -q --dest-tls-verify=false --dest-creds alice:alice-pass "oci:$L:app" "docker://127.0.0.1:$NGINX_PORT/team/app:$tag"
done
say "bob pulls team/app:1.0; bob tries a wrong password three times"
skopeo --insecure-policy copy -q --src-tls-verify=false --src-creds bob:bob-pass "docker://127.0.0.1:$NGINX_PORT/team/app:1.0" "dir:$DIR/pull/app"
for _ in 1 2 3; do curl -s -o /dev/null -u bob:wrong "http://127.0.0.1:$NGINX_PORT/v2/"; done

wait_log nginx-access "$DIR/logs/access.log"
wait_log nginx-error "$DIR/logs/error.log"
say "regwatch's metrics (curl -s http://127.0.0.1:$RW_PORT/metrics | grep ^regwatch_):"
curl -s "http://127.0.0.1:$RW_PORT/metrics" | grep '^regwatch_'
wait_audit "actor=bob&action=pull" 1
wait_audit "action=auth_failure" 3
say "who did what ($RW audit query --grouped --config $DIR/regwatch.toml):"
"$RW" audit query --grouped --config "$DIR/regwatch.toml"
say "failed logins, from nginx's access and error logs (one row each):"
"$RW" audit query --config "$DIR/regwatch.toml" --action auth_failure
say "what the registry holds (regwatch inventory: shared layers counted once):"
"$RW" inventory --config "$DIR/regwatch.toml"
say "its storage (regwatch storage):"
"$RW" storage --config "$DIR/regwatch.toml"
say "the raw audit rows, and the hash chain:"
"$RW" audit query --config "$DIR/regwatch.toml" --limit 12
"$RW" audit verify --config "$DIR/regwatch.toml"
say "the weekly audit report, written now instead of on Monday ($RW report run weekly-audit):"
"$RW" report run weekly-audit --config "$DIR/regwatch.toml"
cat >&2 <<EOF

Where to look:
  http://127.0.0.1:$RW_PORT/           regwatch (also /metrics, /healthz, /readyz)
  $DIR/regwatch.toml    its config; edit it and 'kill -HUP \$(cat $DIR/run/regwatch.pid)' to reload
  $DIR/regwatch.db      the audit trail (mode 0600): regwatch audit query|export|verify --config $DIR/regwatch.toml
  curl -H "Authorization: Bearer \$(cat $DIR/secrets/api-token)" 'http://127.0.0.1:$RW_PORT/api/v1/audit?view=activities'
  $DIR/reports/         the audit report (HTML: open it in a browser)
  $DIR/logs/            registry, nginx and regwatch logs
  http://127.0.0.1:$NGINX_PORT/v2/     the registry through nginx (alice/alice-pass, bob/bob-pass)
Stop everything with: scripts/demo.sh down
EOF
