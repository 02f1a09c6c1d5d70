#!/usr/bin/env bash
# The `riffle bench shuffle --hostfile` sweep of docs/benchmarks.md ("On your own hosts"):
# two network namespaces joined by a veth pair stand for two hosts (127.1.0.1 and
# 127.1.0.2, loopback-range addresses: nothing leaves the machine); the link is shaped with
# tbf to each rate of SHAPES in turn ("none" = unshaped), and the exchange sweep runs
# across it: 72-byte and 1 KiB records, 2 processes x 1 and x 2 workers, with the raw
# timely baseline and the TCP ceiling measured between the two namespaces.
#
#   cargo build --release -p riffle-cli
#   sudo benches/netns_sweep.sh [RIFFLE_BINARY] [OUT_DIR]
#
# Needs root, `ip` and `tc`. No added latency: this kernel has no netem qdisc ("Specified
# qdisc kind is unknown"); where netem exists, set DELAY=0.1ms (each way) to add it.
# Environment: SHAPES (default "none 10gbit:8mb 1gbit:1mb", rate:tbf-burst), DELAY,
# SWEEP (process 0's options). Prints one table per shaping and writes OUT_DIR/*.json.
set -euo pipefail

RIFFLE=$(realpath "${1:-target/release/riffle}")
OUT=${2:-docs/results/netns}
SHAPES=${SHAPES:-"none 10gbit:8mb 1gbit:1mb"}
DELAY=${DELAY:-}
SWEEP=${SWEEP:-"--sizes 72,1024 --workers 1,2 --ops exchange --skew --tcp-mib 512"}
mkdir -p "$OUT"

A=riffle-sw-a$$ B=riffle-sw-b$$ VA=rswa$$ VB=rswb$$
cleanup() {
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
# Made inside the namespaces: deleting them deletes the pair.
ip link add "$VA" netns "$A" type veth peer name "$VB" netns "$B"
for side in "$A:$VA:127.1.0.1" "$B:$VB:127.1.0.2"; do
    IFS=: read -r ns dev addr <<<"$side"
    ip -n "$ns" addr add "$addr/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
    # lo up (a process must reach its own address) but only with 127.0.0.1: its usual
    # 127.0.0.0/8 would make the other side's 127.1.0.x local too.
    ip -n "$ns" link set lo up
    ip -n "$ns" addr del 127.0.0.1/8 dev lo
    ip -n "$ns" addr add 127.0.0.1/32 dev lo
    # 127.x on a device other than lo is dropped unless route_localnet is set.
    for scope in all default "$dev"; do
        ip netns exec "$ns" sysctl -qw "net.ipv4.conf.$scope.route_localnet=1"
    done
done
HOSTS="$OUT/hosts.txt"
printf '127.1.0.1:7401\n127.1.0.2:7401\n' >"$HOSTS"

for shape in $SHAPES; do
    rate=${shape%%:*}
    burst=${shape#*:}
    for side in "$A:$VA" "$B:$VB"; do
        IFS=: read -r ns dev <<<"$side"
        tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
        if [ -n "$DELAY" ] && [ "$rate" != none ]; then
            tc -n "$ns" qdisc add dev "$dev" root netem delay "$DELAY" rate "$rate"
        elif [ -n "$DELAY" ]; then
            tc -n "$ns" qdisc add dev "$dev" root netem delay "$DELAY"
        elif [ "$rate" != none ]; then
            tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms
        fi
    done
    echo "=== link: $rate ${DELAY:+delay $DELAY} ($(uptime | sed 's/.*load/load/'))"
    ip netns exec "$B" timeout 3600 "$RIFFLE" bench shuffle --hostfile "$HOSTS" --process 1 >"$OUT/$rate-p1.log" 2>&1 &
    p1=$!
    # shellcheck disable=SC2086 # SWEEP is a list of options
    ip netns exec "$A" timeout 3600 "$RIFFLE" bench shuffle $SWEEP --hostfile "$HOSTS" --process 0 \
        --json "$OUT/$rate.json" | tee "$OUT/$rate.txt"
    wait "$p1"
done

# One table: Riffle (pod and serde codecs) against the timely baseline and the TCP
# ceiling between the namespaces. With 2 processes half the records stay in their
# process, so each direction of the link carries about a quarter of the record bytes.
python3 - "$OUT" $SHAPES <<'EOF'
import json, sys
out, shapes = sys.argv[1], [s.split(":")[0] for s in sys.argv[2:]]
print("| link | record | procs x workers | Riffle pod MB/s | Riffle bitcode (serde) MB/s | timely MB/s | TCP ceiling MB/s | Riffle pod / TCP | pod bytes on the link each way / TCP | spread (pod, serde, timely) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for shape in shapes:
    r = json.load(open(f"{out}/{shape}.json"))
    tcp = r["tcp_mb_per_s"]
    for b in r["baselines"]:
        s = b["spec"]
        same = lambda x: x["spec"]["size"] == s["size"] and x["spec"]["workers"] == s["workers"]
        rows = {x["spec"]["codec"]: x for x in r["rows"] if same(x) and x["spec"]["op"] == "Exchange"}
        pod, serde = rows.get("Pod"), rows.get("Serde")
        mb = lambda x: f"{x['mb_per_s']:.0f}" if x else "-"
        sp = lambda x: f"{x['spread']:.2f}" if x else "-"
        print(f"| {shape} | {s['size']} B | {s['processes']} x {s['workers']} | {mb(pod)} | {mb(serde)} | {b['mb_per_s']:.0f} "
              f"| {tcp:.0f} | {pod['mb_per_s'] / tcp:.2f}x | {pod['mb_per_s'] / 4 / tcp:.2f}x "
              f"| {sp(pod)}, {sp(serde)}, {sp(b)} |")
EOF
