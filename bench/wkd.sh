#!/usr/bin/env bash
# WKD benchmark: requests/s of `sealgate serve` answering WKD lookups for a
# directory of N keys, next to nginx serving `sealgate wkd export` of the
# same keys, in one run on loopback. Needs wrk and nginx (Debian packages
# wrk, nginx-light; installed when missing, as root).
#   bench/wkd.sh [N] [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000} SECS=${2:-10} CONNS=${3:-32}
for p in wrk nginx; do
  command -v $p >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; }
done
work=$(mktemp -d /tmp/sealgate-wkd.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; [ -f $work/nginx.pid ] && kill $(cat $work/nginx.pid) 2>/dev/null; rm -rf $work' EXIT
go build -o $work/sealgate ./cmd/sealgate
go build -o $work/wkdpopulate ./bench/wkdpopulate

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
SG=$(port); NG=$(port)
cat > $work/sealgate.toml <<TOML
data_dir = "$work/data"
[smtp]
listen = "127.0.0.1:$(port)"
[http]
listen = "127.0.0.1:$SG"
[directory]
domains = ["example.org"]
[log]
level = "warn"
TOML
echo "populating $N keys..." >&2
$work/wkdpopulate -data-dir $work/data -n $N -paths $work/paths.txt
$work/sealgate wkd export --config $work/sealgate.toml $work/export >/dev/null
chmod 755 $work && chmod -R a+rX $work/export   # nginx workers run unprivileged
cat > $work/nginx.conf <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NG;
    root $work/export/openpgpkey.example.org;
    location /.well-known/openpgpkey/ {
      default_type application/octet-stream;
      add_header Access-Control-Allow-Origin * always;
      add_header Cache-Control no-cache always;
    }
  }
}
NGINX
nginx -c $work/nginx.conf
$work/sealgate serve --config $work/sealgate.toml 2>$work/sealgate.log &
sleep 1
cat > $work/paths.lua <<'LUA'
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
math.randomseed(os.time())
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f req/s p50 %.2f ms p99 %.2f ms errors %d non2xx %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
LUA
run() { PATHS=$work/paths.txt wrk -t2 -c$CONNS -d${SECS}s -s $work/paths.lua "http://127.0.0.1:$1" | grep RESULT; }
# Check both serve the same key for one path before measuring.
p=$(head -1 $work/paths.txt)
cmp <(curl -fsS "http://127.0.0.1:$SG$p") <(curl -fsS "http://127.0.0.1:$NG$p") || { echo "sealgate and nginx disagree on $p" >&2; exit 1; }
# sealgate keeps reduced keys in a cache (keyed by fingerprint and change
# time): the first pass runs mostly cold, the second warm.
s1=$(run $SG); s2=$(run $SG); n=$(run $NG)
echo "keys: $N  connections: $CONNS  duration: ${SECS}s each"
echo "sealgate serve, first pass:    $s1"
echo "sealgate serve, second pass:   $s2"
echo "nginx (wkd export):            $n"
awk -v a="$(echo $s1 | awk '{print $2}')" -v w="$(echo $s2 | awk '{print $2}')" -v b="$(echo $n | awk '{print $2}')" \
  'BEGIN{printf "ratio sealgate/nginx: first pass %.2f, second pass %.2f\n", a/b, w/b}'
