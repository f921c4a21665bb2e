#!/usr/bin/env bash
# Runs every sealgate test. Installs the real peers the tests talk to
# (Debian packages) when they are missing, then runs the Go test suite
# with the race detector. Extra arguments go to `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
have gpg                           || need_pkgs+=(gnupg)
have gpgsm                         || need_pkgs+=(gpgsm)
have /usr/lib/gnupg/gpg-wks-client || need_pkgs+=(gpg-wks-client)
have sq                            || need_pkgs+=(sq)
have rnp                           || need_pkgs+=(rnp)
have swaks                         || need_pkgs+=(swaks)
have /usr/sbin/smtp-sink           || need_pkgs+=(postfix)
have openssl                       || need_pkgs+=(openssl)
have cmsutil                       || need_pkgs+=(libnss3-tools)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need_pkgs[*]} (run as root, or: sudo apt-get install ${need_pkgs[*]})" >&2
    exit 1
  fi
  echo "installing: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Postfix must not ask questions or start a system instance.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  if command -v postfix >/dev/null 2>&1; then postfix stop >/dev/null 2>&1 || true; fi
fi

# PostgreSQL: the store tests run against it at 127.0.0.1:5432 (trust auth,
# database "test"). Development and CI machines have one running; where none
# answers, install Debian's server and start it with that setup.
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! pg_up; then
  if [ "$(id -u)" != 0 ]; then
    echo "no PostgreSQL at 127.0.0.1:5432 and not root: start one (trust auth, database test)" >&2
    exit 1
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing: postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || pg_ctlcluster "$ver" main start
  for _ in $(seq 30); do pg_up && break; sleep 1; done
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='test'\"" | grep -q 1 \
    || su postgres -c "createdb test"
fi

go version
go vet ./...
go test -race -count=1 -timeout 20m "$@" ./...

# Every fuzz target fuzzes briefly on top of its seed corpus (which the run
# above already replayed); SECURITY.md has the command for longer runs. A
# failure prints the crashing input, which Go also saves under testdata/.
fuzztime=${SEALGATE_FUZZTIME:-3s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
  for name in $(grep -hoE '^func Fuzz[A-Za-z0-9_]+' "$dir"/*_test.go | cut -d' ' -f2); do
    echo "fuzzing $name in $dir for $fuzztime"
    if ! go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$dir" >"$log" 2>&1; then
      cat "$log"
      exit 1
    fi
  done
done
