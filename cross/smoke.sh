#!/usr/bin/env bash
# Smoke test of one cross-built binary under qemu-user:
#   cross/smoke.sh <target-triple> <binary>
# Asserts the binary is static, prints --version and info (qemu-user has no
# io_uring, so the blocking fallback must engage), does a store round trip
# (durable writes, check, backup, restore) and runs the appliance until
# /readyz answers, then stops it with SIGTERM.
set -euo pipefail
target=$1
bin=$(realpath "$2")
case "$target" in
  x86_64-*) qemu="" ;;
  aarch64-*) qemu=qemu-aarch64-static ;;
  riscv64*) qemu=qemu-riscv64-static ;;
  *) echo "smoke: unknown target $target" >&2; exit 1 ;;
esac
fail() { echo "smoke[$target]: FAIL: $*" >&2; exit 1; }
run() { ${qemu:+$qemu} "$bin" "$@"; }

file -L "$bin" | grep -Eq "statically linked|static-pie linked" || fail "$bin is not statically linked: $(file -L "$bin")"
if readelf -l "$bin" 2>/dev/null | grep -q "Requesting program interpreter"; then
  fail "$bin asks for a dynamic loader"
fi

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

run --version | grep -q "target: $target" || fail "--version does not name $target"
info=$(run --data-dir "$work/data" info)
if [ -n "$qemu" ]; then
  echo "$info" | grep -q "file I/O:       blocking pool" || fail "io_uring fallback did not engage under qemu: $info"
fi
run --data-dir "$work/data" store bench --writers 2 --writes 100 2>/dev/null || fail "store bench"
run --data-dir "$work/data" store check | grep -q ": ok" || fail "store check"
run --data-dir "$work/data" store backup "$work/backup.redb" >/dev/null || fail "store backup"
run --data-dir "$work/data" store restore "$work/backup.redb" >/dev/null || fail "store restore"

# Roles listen on free ports, so the smoke never collides with a service.
: > "$work/edgebox.toml"
# (Outputs are read whole before grep: `grep -q` leaves a pipe early,
# which pipefail would report as the writer's failure.)
roles=$(run --list)
for role in tsdb orchestrator; do
  if grep -q "^$role " <<< "$roles"; then printf '[%s]\nlisten = "127.0.0.1:0"\n' "$role" >> "$work/edgebox.toml"; fi
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
${qemu:+$qemu} "$bin" --config "$work/edgebox.toml" --data-dir "$work/data" --admin-listen "127.0.0.1:$port" --log-format json up 2>"$work/log" &
pid=$!
for _ in $(seq 1 200); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.05
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || fail "appliance never became ready: $(cat "$work/log")"
metrics=$(curl -fsS "http://127.0.0.1:$port/metrics") || fail "/metrics did not answer"
grep -q "^edgebox_io_uring_active" <<< "$metrics" || fail "no metrics"
kill -TERM "$pid"
wait "$pid" || fail "appliance exited with $? after SIGTERM"
pid=""
size=$(stat -c %s "$bin")
echo "smoke[$target]: ok ($size bytes, $(echo "$info" | grep 'file I/O' | sed 's/ \+/ /g'))"
