#!/usr/bin/env bash
# The demo: builds understudy, creates a cluster CA, and starts a coordinator and two agents
# on three hosts (network namespaces on this machine, joined by a bridge). The agents find
# the coordinator over mutual-TLS QUIC. Then it starts a protected workload on host-a (a
# counter that keeps its count only in memory), waits until its understudy on host-b is
# current, migrates it to host-b with `understudy migrate`, and shows that it kept
# counting from where it was. It refreshes `understudy workload list` every few seconds
# until Ctrl-C, then stops everything cleanly and removes the hosts.
#
# Run as root on Debian 12:  sudo bash scripts/demo.sh
# UNDERSTUDY_DEMO_SECONDS=N stops it by itself after N seconds (used by CI).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
bash packaging/criu/provision-criu.sh

echo "==> building" >&2
cargo build --workspace --bins --locked -q
BIN=$PWD/target/debug
DIR=${UNDERSTUDY_DEMO_DIR:-/tmp/understudy-demo}
BR=usdemo0
NET=10.232.0
HOSTS=(coord host-a host-b)
# The counter's data directory, as the workload sees it; each host keeps its own copy under
# $DIR/HOST/root (its [workload_data] host_root).
DATA=/srv/understudy-demo/counter
pids=()

cleanup() {
  trap - EXIT INT TERM
  echo "==> stopping (SIGTERM, bounded drain)" >&2
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # Workloads outlive their agent (as under systemd's KillMode=process); the demo's do not.
  for h in "${HOSTS[@]}"; do
    ip netns pids "usdemo-$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  for h in "${HOSTS[@]}"; do ip netns del "usdemo-$h" 2>/dev/null || true; done
  ip link del "$BR" 2>/dev/null || true
  rmdir "$DATA" /srv/understudy-demo 2>/dev/null || true  # the empty mount point
  echo "==> stopped; logs are in $DIR/*/log" >&2
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "==> creating hosts ${HOSTS[*]} on $NET.0/24" >&2
for h in "${HOSTS[@]}"; do ip netns del "usdemo-$h" 2>/dev/null || true; done
ip link del "$BR" 2>/dev/null || true
ip link add "$BR" type bridge
ip addr add "$NET.254/24" dev "$BR"
ip link set "$BR" up
i=0
for h in "${HOSTS[@]}"; do
  i=$((i + 1))
  ns=usdemo-$h
  ip netns add "$ns"
  ip link add "usdemo-v$i" type veth peer name "usdemo-p$i"
  ip link set "usdemo-p$i" netns "$ns"
  ip link set "usdemo-v$i" master "$BR" up
  ip -n "$ns" link set "usdemo-p$i" name eth0
  ip -n "$ns" addr add "$NET.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

echo "==> cluster CA and certificates in $DIR/tls" >&2
rm -rf "$DIR"
mkdir -p "$DIR/tls"
"$BIN/understudy" ca init --dir "$DIR/tls"
"$BIN/understudy" ca issue --dir "$DIR/tls" --name coord --role coordinator
for h in host-a host-b; do "$BIN/understudy" ca issue --dir "$DIR/tls" --name "$h" --role agent; done
# The operator's own certificate for the HTTPS API (admin: the demo's workload runs as root).
"$BIN/understudy" ca issue --dir "$DIR/tls" --name demo-admin --role admin

mkdir -p "$DIR/coord"
cat >"$DIR/coord/coordinator.toml" <<TOML
[quic]
listen = "0.0.0.0:7440"
[http]
listen = "0.0.0.0:7441"
[tls]
ca = "$DIR/tls/ca.crt"
cert = "$DIR/tls/coord.crt"
key = "$DIR/tls/coord.key"
[store]
path = "$DIR/coord/coordinator.redb"
TOML
for h in host-a host-b; do
  mkdir -p "$DIR/$h"
  cat >"$DIR/$h/agent.toml" <<TOML
[agent]
data_dir = "$DIR/$h/data"
[coordinator]
addresses = ["$NET.1:7440"]
[tls]
ca = "$DIR/tls/ca.crt"
cert = "$DIR/tls/$h.crt"
key = "$DIR/tls/$h.key"
[workload_data]
allowed_roots = ["/srv/understudy-demo"]
host_root = "$DIR/$h/root"
TOML
done
mkdir -p "$DIR/host-a/root$DATA"

start() {  # host, program, args...
  local h=$1; shift
  nsenter --net="/run/netns/usdemo-$h" -- "$@" </dev/null >>"$DIR/$h/log" 2>&1 &
  pids+=($!)
}
"$BIN/understudy" validate "$DIR/coord/coordinator.toml"
start coord "$BIN/understudy" serve --config "$DIR/coord/coordinator.toml"
for h in host-a host-b; do
  "$BIN/understudy-agent" validate "$DIR/$h/agent.toml"
  start "$h" "$BIN/understudy-agent" --config "$DIR/$h/agent.toml"
done

export UNDERSTUDY_COORDINATOR=https://$NET.1:7441
export UNDERSTUDY_CA=$DIR/tls/ca.crt UNDERSTUDY_CERT=$DIR/tls/demo-admin.crt UNDERSTUDY_KEY=$DIR/tls/demo-admin.key
echo "==> waiting for both agents to register (UNDERSTUDY_COORDINATOR=$UNDERSTUDY_COORDINATOR)" >&2
connected=0
for _ in $(seq 100); do
  connected=$("$BIN/understudy" hosts --output json 2>/dev/null |
    python3 -c 'import json,sys; print(sum(h["connected"] for h in json.load(sys.stdin)["hosts"]))' 2>/dev/null || echo 0)
  [ "$connected" = 2 ] && break
  sleep 0.2
done
[ "$connected" = 2 ] || { echo "demo: agents did not register; see $DIR/*/log" >&2; exit 1; }

"$BIN/understudy" status
echo
"$BIN/understudy" hosts
echo
echo "==> both agents registered over mutual-TLS QUIC" >&2

echo "==> starting workload 'counter' on host-a, shadowed on host-b (epoch every 1 s);" >&2
echo "    it counts in memory, prints each count, and appends it to $DATA/counts.txt" >&2
"$BIN/understudy" workload create counter --host host-a --shadow host-b --interval 1s \
  --data-dir "$DATA" -- /usr/bin/python3 -c 'import time
f = open("'"$DATA"'/counts.txt", "a")
n = 0
while True:
    n += 1
    print(n, flush=True)
    f.write("%d\n" % n); f.flush()
    time.sleep(0.01)'
epochs=0
for _ in $(seq 150); do
  epochs=$("$BIN/understudy" workload show counter --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["epochs"])')
  [ "$epochs" -ge 2 ] && break
  sleep 0.2
done
[ "$epochs" -ge 2 ] || { echo "demo: no epoch reached host-b; see $DIR/*/log" >&2; exit 1; }
echo
"$BIN/understudy" workload show counter
echo
log() { echo "$DIR/$1/data/workloads/counter/output.log"; }
echo "==> counter on host-a is at $(tail -n1 "$(log host-a)"); migrating it to host-b" >&2
"$BIN/understudy" migrate counter
sleep 0.5
echo
echo "==> last count logged on host-a: $(tail -n1 "$(log host-a)")"
echo "==> first counts logged on host-b: $(head -n3 "$(log host-b)" | tr '\n' ' ')"
echo "==> latest on host-b:              $(tail -n1 "$(log host-b)") (still counting, in memory, on the new host)"
counts() { echo "$DIR/$1/root$DATA/counts.txt"; }
echo "==> its data file on host-b ($(counts host-b)):"
echo "    $(wc -l <"$(counts host-b)") lines, last $(tail -n1 "$(counts host-b)"); lines that are not 1, 2, 3, ... in order: $(awk 'NR != $1' "$(counts host-b)" | wc -l)"
echo "==> host-a's stale copy is gone: $( [ -e "$(counts host-a)" ] && echo "no, still there" || echo yes)"
echo
"$BIN/understudy" workload list
echo
echo "==> refreshing every 5 s; Ctrl-C stops" >&2
end=$(( $(date +%s) + ${UNDERSTUDY_DEMO_SECONDS:-1000000000} ))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep 5
  echo "--- $(date +%T)"
  "$BIN/understudy" workload list
done
