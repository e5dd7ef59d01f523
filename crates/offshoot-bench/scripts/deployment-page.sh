#!/usr/bin/env bash
# Server time of the deployment page for a 1,000-asset branch deployment: the page's API calls
# (the deployment and its graph), measured with curl against a real `offshoot serve` watching a
# generated repository. Usage: deployment-page.sh [path/to/offshoot] (default target/release).
set -eu
offshoot=$(realpath "${1:-target/release/offshoot}")
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/repo/assets/gen"
cd "$work/repo"
git init -q -b main .
printf '[project]\nname = "big"\n\n[sources.raw_orders]\n' > offshoot.toml
python3 -c '
import random
random.seed(1)
for i in range(1000):
    ups = ["raw_orders"] if i < 20 else ["m%d" % u for u in random.sample(range(max(0, i - 60), i), k=3)]
    joins = " ".join("JOIN %s AS t%d ON t%d.id = t0.id" % (u, j, j) for j, u in enumerate(ups[1:], 1))
    open("assets/gen/m%d.sql" % i, "w").write("/* offshoot\ntags = { layer = \"l%d\" }\n*/\nSELECT t0.id, %d AS n FROM %s AS t0 %s\n" % (i % 5, i, ups[0], joins))
'
git add -A
git -c user.name=b -c user.email=b@example.com commit -qm big
git checkout -q -b feature/x
sed -i 's/AS n/AS n, 1 AS flag/' assets/gen/m500.sql
git -c user.name=b -c user.email=b@example.com commit -qam change
git checkout -q main
"$offshoot" serve --data-dir "$work/data" --listen 127.0.0.1:0 --repo "$work/repo" 2> "$work/log" &
server=$!
for _ in $(seq 200); do grep -q "serving on" "$work/log" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/log" | head -1)
ready='import json, sys
d = [x for x in json.load(sys.stdin) if x["branch"] == "feature/x" and x["current_revision"]]
print(d[0]["name"] if d else "")'
name=""
for _ in $(seq 300); do
  name=$(curl -s "$url/api/v1/deployments" | python3 -c "$ready")
  [ -n "$name" ] && break
  sleep 0.2
done
measure() {
  for _ in $(seq 21); do curl -s -o /dev/null -w '%{time_total}\n' "$url$1"; done |
    sort -n | awk '{a[NR] = $1} END {printf "median %.1f ms (min %.1f, max %.1f)\n", a[11] * 1000, a[1] * 1000, a[21] * 1000}'
}
echo "GET /api/v1/deployments/$name/graph (1,001 assets): $(measure "/api/v1/deployments/$name/graph")"
echo "GET /api/v1/deployments/$name: $(measure "/api/v1/deployments/$name")"
echo "GET /api/v1/deployments/$name/revisions: $(measure "/api/v1/deployments/$name/revisions")"
