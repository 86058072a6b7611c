#!/usr/bin/env bash
# Two dcmesh sites on this machine, each in its own network namespace, joined
# by an underlay veth: builds dcmesh, generates keys, writes both configs,
# runs both agents with the embedded WireGuard backend (no kernel module
# needed), shows the tunnel, sends traffic between the sites' prefixes, shows
# that a killed agent fails closed, and removes everything it created.
#
#   sudo examples/netns-walkthrough.sh
#
# It touches nothing outside its two namespaces (dcmwalk-a, dcmwalk-b) and a
# temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces need it): sudo $0" >&2; exit 1; }
for tool in ip ping go; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install --no-install-recommends iproute2 iputils-ping; Go from go.dev)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/dcmesh-walkthrough.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del dcmwalk-a 2>/dev/null || true
  ip netns del dcmwalk-b 2>/dev/null || true
  rm -f /var/run/wireguard/dcmwalka.sock /var/run/wireguard/dcmwalkb.sock
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }

step "build dcmesh"
go build -o "$work/dcmesh" ./cmd/dcmesh
dcmesh="$work/dcmesh"

step "two namespaces on one underlay link (192.168.77.0/24)"
ip netns add dcmwalk-a
ip netns add dcmwalk-b
ip link add dcmwalk0 netns dcmwalk-a type veth peer name dcmwalk1 netns dcmwalk-b
ip -n dcmwalk-a addr add 192.168.77.1/24 dev dcmwalk0
ip -n dcmwalk-b addr add 192.168.77.2/24 dev dcmwalk1
for ns in dcmwalk-a dcmwalk-b; do
  ip -n "$ns" link set lo up
done
ip -n dcmwalk-a link set dcmwalk0 up
ip -n dcmwalk-b link set dcmwalk1 up
# Each site's own prefix, represented by an address on lo.
ip -n dcmwalk-a addr add 10.1.0.1/24 dev lo
ip -n dcmwalk-b addr add 10.2.0.1/24 dev lo

step "keys (private keys stay in files, mode 0600; only public keys are printed)"
pub_a=$("$dcmesh" key generate --out "$work/a.key")
pub_b=$("$dcmesh" key generate --out "$work/b.key")
echo "site a: $pub_a"
echo "site b: $pub_b"

write_config() { # name iface key overlay local peer peer_pub peer_endpoint peer_prefixes
  cat > "$work/$1.yaml" <<CFG
site: $1
interface: $2
private_key_file: $3
state_dir: $work/$1-state
overlay_address: $4
local_prefixes: [$5]
wireguard: userspace
peers:
  - name: $6
    public_key: $7
    endpoint: $8
    allowed_prefixes: [$9]
CFG
}
write_config a dcmwalka "$work/a.key" 10.255.0.1/32 10.1.0.0/24 b "$pub_b" 192.168.77.2:51820 "10.2.0.0/24, 10.255.0.2/32"
write_config b dcmwalkb "$work/b.key" 10.255.0.2/32 10.2.0.0/24 a "$pub_a" 192.168.77.1:51820 "10.1.0.0/24, 10.255.0.1/32"
echo "--- $work/a.yaml"; cat "$work/a.yaml"

step "start both agents"
ip netns exec dcmwalk-a "$dcmesh" agent --config "$work/a.yaml" >"$work/a.log" 2>&1 & pids+=($!)
ip netns exec dcmwalk-b "$dcmesh" agent --config "$work/b.yaml" >"$work/b.log" 2>&1 & pids+=($!)
for i in $(seq 1 50); do
  grep -q "agent running" "$work/a.log" && grep -q "agent running" "$work/b.log" && break
  sleep 0.1
done
cat "$work/a.log"

step "routes of site a (protocol 220 = dcmesh): into the tunnel, and fail-closed"
ip -n dcmwalk-a route show proto 220

step "traffic from site a's prefix to site b's"
ip netns exec dcmwalk-a ping -c 3 -i 0.3 -I 10.1.0.1 10.2.0.1

if command -v wg >/dev/null; then
  step "wg show (wireguard-tools) in site a"
  ip netns exec dcmwalk-a wg show dcmwalka
fi

step "kill -9 site a's agent: its embedded device is gone, traffic is refused (not leaked)"
kill -9 "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
ip -n dcmwalk-a route show proto 220
if ip netns exec dcmwalk-a ping -c 1 -W 1 -I 10.1.0.1 10.2.0.1 >/dev/null 2>&1; then
  echo "UNEXPECTED: traffic still flows" >&2; exit 1
fi
echo "ping 10.2.0.1 from site a: refused, as it should be"

step "done; cleaning up"
