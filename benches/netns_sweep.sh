#!/usr/bin/env bash
# The `riffle bench shuffle --hostfile` sweep of docs/benchmarks.md ("On your own hosts"):
# two network namespaces stand for two hosts (127.1.0.1 and 127.1.0.2, loopback-range
# addresses: nothing leaves the machine), joined either by a veth pair or, with
# DELAY_US, by the delay line (benches/delay_line.rs: a TUN device in each namespace and
# a process forwarding between them, holding each packet DELAY_US each way: the latency
# of netem, which this kernel lacks). The link is shaped with tbf to each rate of SHAPES
# in turn ("none" = unshaped), its round trip is measured, and the exchange sweep runs
# across it: 72-byte and 1 KiB records, 2 processes x 1 and x 2 workers, with the raw
# timely baseline and the TCP ceiling measured between the two namespaces.
#
#   cargo build --release -p riffle-cli -p riffle-benches --bin riffle --bin delay_line
#   sudo benches/netns_sweep.sh [RIFFLE_BINARY] [OUT_DIR]                    # veth
#   sudo DELAY_US=100 benches/netns_sweep.sh [RIFFLE_BINARY] [OUT_DIR]       # + 0.2 ms RTT
#
# Needs root, `ip`, `tc` and python3 (the round-trip probe). Environment: SHAPES (default
# "none 10gbit:8mb 1gbit:1mb", rate:tbf-burst), DELAY_US and DELAY_LINE (the delay line's
# binary, default next to RIFFLE_BINARY), SWEEP (process 0's options). Prints one table
# per shaping and writes OUT_DIR/*.json, OUT_DIR/rtt-*.txt and, with the delay line, the
# hold times it really gave each packet (OUT_DIR/delay_line.txt).
set -euo pipefail

RIFFLE=$(realpath "${1:-target/release/riffle}")
OUT=${2:-docs/results/netns}
SHAPES=${SHAPES:-"none 10gbit:8mb 1gbit:1mb"}
DELAY_US=${DELAY_US:-}
DELAY_LINE=${DELAY_LINE:-$(dirname "$RIFFLE")/delay_line}
SWEEP=${SWEEP:-"--sizes 72,1024 --workers 1,2 --ops exchange --skew --tcp-mib 512"}
mkdir -p "$OUT"

A=riffle-sw-a$$ B=riffle-sw-b$$ VA=rswa$$ VB=rswb$$
LINE=
cleanup() {
    if [ -n "$LINE" ]; then
        kill "$LINE" 2>/dev/null && wait "$LINE" || true
        cat "$OUT/delay_line.txt"
    fi
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
if [ -n "$DELAY_US" ]; then
    # The line's TUN devices live as long as it runs; a large MTU lets a packet carry up
    # to 64 KB, as a veth's segmentation offload does, so forwarding keeps up.
    VA=rdl0 VB=rdl0
    "$DELAY_LINE" --netns "$A" --netns "$B" --dev rdl0 --delay-us "$DELAY_US" >"$OUT/delay_line.txt" &
    LINE=$!
    for _ in $(seq 100); do grep -q ready "$OUT/delay_line.txt" && break; sleep 0.1; done
    grep -q ready "$OUT/delay_line.txt" || { echo "the delay line did not start" >&2; exit 1; }
    ip -n "$A" link set rdl0 mtu 65000
    ip -n "$B" link set rdl0 mtu 65000
else
    # Made inside the namespaces: deleting them deletes the pair.
    ip link add "$VA" netns "$A" type veth peer name "$VB" netns "$B"
fi
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
# The link's round trip: 1,000 one-byte TCP ping-pongs from A to B (NODELAY), median and
# spread, in microseconds. Python's own cost (tens of us) is in every figure alike.
rtt() {
    ip netns exec "$B" timeout 60 python3 -c '
import socket
s = socket.create_server(("127.1.0.2", 7499))
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while d := c.recv(1):
    c.sendall(d)
' &
    local server=$!
    sleep 0.5
    ip netns exec "$A" timeout 60 python3 -c '
import socket, time
c = socket.create_connection(("127.1.0.2", 7499))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
r = []
for _ in range(1000):
    t = time.perf_counter(); c.sendall(b"x"); c.recv(1); r.append((time.perf_counter() - t) * 1e6)
r.sort()
print(f"round trip: p50 {r[500]:.0f} us, p10 {r[100]:.0f} us, p90 {r[900]:.0f} us")
' | tee "$1"
    wait "$server" || true
}

HOSTS="$OUT/hosts.txt"
printf '127.1.0.1:7401\n127.1.0.2:7401\n' >"$HOSTS"

for shape in $SHAPES; do
    rate=${shape%%:*}
    burst=${shape#*:}
    for side in "$A:$VA" "$B:$VB"; do
        IFS=: read -r ns dev <<<"$side"
        tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
        if [ "$rate" != none ]; then
            tc -n "$ns" qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms
        fi
    done
    echo "=== link: $rate ${DELAY_US:+delay ${DELAY_US} us each way} ($(uptime | sed 's/.*load/load/'))"
    rtt "$OUT/rtt-$rate.txt"
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
import json, re, sys
out, shapes = sys.argv[1], [s.split(":")[0] for s in sys.argv[2:]]
rtt = lambda shape: re.search(r"p50 (\d+) us", open(f"{out}/rtt-{shape}.txt").read()).group(1)
print("| link | RTT p50 us | record | procs x workers | Riffle pod MB/s | Riffle bitcode (serde) MB/s | timely MB/s | TCP ceiling MB/s | Riffle pod / TCP | pod bytes on the link each way / TCP | spread (pod, serde, timely) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
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
        print(f"| {shape} | {rtt(shape)} | {s['size']} B | {s['processes']} x {s['workers']} | {mb(pod)} | {mb(serde)} | {b['mb_per_s']:.0f} "
              f"| {tcp:.0f} | {pod['mb_per_s'] / tcp:.2f}x | {pod['mb_per_s'] / 4 / tcp:.2f}x "
              f"| {sp(pod)}, {sp(serde)}, {sp(b)} |")
EOF
