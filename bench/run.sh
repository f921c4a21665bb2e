#!/usr/bin/env bash
# SMTP benchmark of sealgate on loopback: throughput, added latency, CPU per
# message and peak RSS for passthrough, PGP/MIME (x25519, RSA-3072, 10
# recipients) and S/MIME (RSA-2048) at 4 KiB, 100 KiB and 10 MiB, next to
# smtp-source -> smtp-sink (the ceiling) and a gpg-once-per-message filter.
# See bench/README.md.
#
#   bench/run.sh [--quick] [--out DIR] [-- SMTPBENCH-FLAGS...]
#
#   --quick    2 s throughput runs instead of 6 s (about 3 minutes in all, not 6)
#   --out DIR  results directory (default bench/results/DATE-HOST[-quick])
#   SMTPBENCH-FLAGS, after --: e.g. -sizes 4KiB -scenarios never,pgp-x25519 -big=false
#
# Needs Go, gpg, openssl, Postfix's smtp-source and smtp-sink, gnuplot (for
# the chart). As root, missing Debian packages (postfix, gnupg, openssl,
# gnuplot-nox) are installed with apt-get; otherwise the script says what is
# missing. SEALGATE_BENCH_PROFILE_DIR=DIR makes every gateway write a CPU
# profile there (DIR/SIZE-SCENARIO.pprof; see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=() out="" extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=(-quick) ;;
    --out) out=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

PATH=$PATH:/usr/sbin:/sbin
need() { # command debian-package
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $2 (for $1)..." >&2
    [ "$2" = postfix ] && echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
    [ "$2" = postfix ] && { postfix stop >/dev/null 2>&1 || true; }
  fi
  command -v "$1" >/dev/null || { echo "bench/run.sh: $1 is missing (Debian package $2)" >&2; exit 1; }
}
need go golang
need gpg gnupg
need openssl openssl
need smtp-source postfix
need smtp-sink postfix
need gnuplot gnuplot-nox

host=$(hostname -s 2>/dev/null || hostname)
mode=$([ ${#quick[@]} -gt 0 ] && echo -quick || true)
out=${out:-bench/results/$(date +%Y-%m-%d)-$host$mode}
work=$(mktemp -d /tmp/sealgate-bench.XXXXXX)
pid=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  # Anything smtpbench started and could not stop: it lists "PID NAME" in
  # $work/pids and marks each child's environment with this run.
  if [ -f "$work/pids" ]; then
    while read -r p name; do
      { tr '\0' '\n' < /proc/"$p"/environ; } 2>/dev/null | grep -qxF "SEALGATE_BENCH_RUN=$work" && kill -KILL "$p" 2>/dev/null || true
    done < "$work/pids"
  fi
  for h in "$work/gnupg" "$work/gnupg-filter"; do gpgconf --homedir "$h" --kill all 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SEALGATE_BENCH_LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg) && export SEALGATE_BENCH_LOADAVG
echo "building into $work/bin..." >&2
mkdir -p "$work/bin"
for p in ./cmd/sealgate ./bench/smtpload ./bench/gpgfilter ./bench/smtpbench; do
  go build -o "$work/bin/" "$p"
done
"$work/bin/smtpbench" -work "$work" -bin "$work/bin" -out "$out" ${quick[@]+"${quick[@]}"} ${extra[@]+"${extra[@]}"} &
pid=$!
wait "$pid"
pid=""

# bench/results/latest is what the README links: a full run always replaces
# it, a quick run only when there is none yet.
latest=bench/results/latest
case $out in bench/results/*)
  if [ -z "$mode" ] || [ ! -e "$latest" ]; then
    rm -rf "$latest" && mkdir -p "$latest" && cp "$out"/* "$latest"/
    echo "copied to $latest" >&2
  fi ;;
esac
cat "$out/results.md"
