#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 60) with the nightly
# toolchain; installs cargo-fuzz from crates.io if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
if ! rustup toolchain list | grep -q nightly; then
  echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz sets RUSTFLAGS, which replaces .cargo/config.toml's flags.
export RUSTFLAGS="--cfg tokio_unstable ${RUSTFLAGS:-}"
for t in $(cargo +nightly fuzz list); do
  echo "== fuzz $t for ${secs}s"
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
