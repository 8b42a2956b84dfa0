#!/bin/sh
# The "nothing but Python" check (as root, Linux): in a mount namespace where a
# tmpfs hides /usr/lib/postgresql (so no initdb/pg_ctl/postgres is found, on
# PATH or elsewhere), a fresh clone of this checkout's HEAD passes `make test`
# on the embedded PostgreSQL, and `make run` answers the README's example;
# after a SIGTERM, a second `make run` still has its result.
#
#   sudo tools/check_without_system_pg.sh [PYTEST_ARGS]
set -eu
SOURCE=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
WORK=/tmp/calculator-nopg-$$
mkdir -m 755 "$WORK"
export SOURCE WORK PYTEST_ARGS="${1:-}"
set +e
unshare --mount --propagation private sh -eu -c '
mount -t tmpfs -o size=1m tmpfs /usr/lib/postgresql
for program in initdb pg_ctl postgres; do
    if command -v $program >/dev/null && test -x "$(command -v $program)"; then
        echo "$program is still found: $(command -v $program)"; exit 1
    fi
done
echo "== no PostgreSQL server binaries: $(ls -A /usr/lib/postgresql | wc -l) entries in /usr/lib/postgresql"
git clone -q "$SOURCE" "$WORK/clone"
cd "$WORK/clone"
echo "== make test"
tested=0; make test PYTEST_ARGS="$PYTEST_ARGS" || tested=$?

run() {  # make run in the background, until its banner
    PORT=$1 CALCULATORS=1 make run >"$WORK/$2.out" 2>&1 &
    for _ in $(seq 600); do
        grep -q "Ctrl-C stops everything" "$WORK/$2.out" && break
        sleep 0.1
    done
    cat "$WORK/$2.out"
}
stop() {  # SIGTERM to the run (its pid is in the lock file), then wait for it
    pid=$(cat .run/run.lock); kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    tail -n 1 "$WORK/$1.out"
}
echo "== make run"
run 5931 first
curl -sS -X POST localhost:5931/api/expression -H "Content-Type: application/json" \
     -d "{\"expression\": \"x*t**y\", \"variables\": {\"x\": 10, \"y\": 1, \"t\": 11}}"; echo
curl -sS "localhost:5931/api/result/1?wait=10"; echo
stop first
echo "== make run, again"
run 5932 second
curl -sS "localhost:5932/api/result/1"; echo
stop second
echo "== make test exit status: $tested"
exit $tested
'
status=$?
rm -rf "$WORK"
exit $status
