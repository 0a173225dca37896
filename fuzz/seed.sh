#!/usr/bin/env bash
# Builds the seed corpora for the fuzz targets from the real samples in tests/fixtures:
# fuzz/corpus/<target>/ (not committed; regenerated at will).
set -euo pipefail
cd "$(dirname "$0")"
fx=../tests/fixtures
rm -rf corpus && mkdir -p corpus/log_line corpus/notification corpus/manifest corpus/signature corpus/audit_query corpus/harbor_syslog
i=0
# log_line: the first byte picks the format (0..6 by LogFormat::NAMES, 7 the regex format).
for f in "$fx"/logs/*.log; do
    while IFS= read -r line; do
        for fmt in 0 1 2 3 4 5 6 7; do
            { printf "\\$(printf '%03o' "$fmt")"; printf '%s' "$line"; } > "corpus/log_line/$i"
            i=$((i + 1))
        done
    done < "$f"
done
n=0
while IFS= read -r line; do
    printf '%s' "$line" > "corpus/notification/$n"
    n=$((n + 1))
done < "$fx/notifications.ndjson"
# audit_query: the query strings the README and the tests use.
q=0
for query in 'since=7d' 'since=2026-11-28&until=2026-11-29T10:00:00Z' 'actor=bob&action=auth_failure&limit=50' \
    'repository=team/*&view=activities' 'cursor=42&limit=10000' 'since=9999999999d' 'address=10.0.0.5&registry=main&source=log'; do
    printf '%s' "$query" > "corpus/audit_query/$q"
    q=$((q + 1))
done
m=0
for f in "$fx"/api/*.json; do
    for t in 0 1 2 3 4 5; do
        { printf "\\$(printf '%03o' "$t")"; cat "$f"; } > "corpus/manifest/$m"
        m=$((m + 1))
    done
done
# signature: the first byte picks artifact manifest (0), referrers index (1) or payload + NUL
# + signature (2); the seeds are the cosign-format samples in tests/fixtures/signatures.
s=0
for f in "$fx"/signatures/*.json; do
    for t in 0 1; do
        { printf "\\$(printf '%03o' "$t")"; cat "$f"; } > "corpus/signature/$s"
        s=$((s + 1))
    done
done
for p in "$fx"/signatures/*.payload; do
    { printf '\002'; cat "$p"; printf '\000'; cat "${p%.payload}.sig"; } > "corpus/signature/$s"
    s=$((s + 1))
done
h=0
while IFS= read -r line; do
    printf '%s' "$line" > "corpus/harbor_syslog/$h"
    h=$((h + 1))
done < "$fx/harbor-audit-forward.log"
echo "seeds: $i log lines, $n notification bodies, $m manifests, $s signature inputs, $h Harbor lines"
