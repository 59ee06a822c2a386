#!/usr/bin/env bash
# The demo, run inside the guest by in-guest.sh: loads the module, shows it over
# prismctl and the kernel's YNL CLI, brings the topology up and fetches a page from
# the VIP (served by fe) with curl over IPv4 and IPv6. Arguments: REPO KDIR
set -euo pipefail
repo=$1 kdir=$2
bin=$repo/target/release
step() { printf '\n== %s\n' "$*"; }

step "load the module"
insmod "$repo/prism_sock.ko"
grep prism_sock /proc/modules

step "prismctl status"
"$bin/prismctl" status

step "GET_INFO through the kernel's YNL CLI"
python3 "$kdir/tools/net/ynl/cli.py" --spec "$repo/docs/netlink/prism_sock.yaml" \
  --schema "$kdir/Documentation/netlink/genetlink.yaml" --do get-info --json '{"proto-version": 1}'

step "topology: client -- l4 -- {fe, be1, be2}, VIP on every node, l4 routes it to fe"
"$bin/prism-guest-suite" topology-up
for ns in client l4 fe be1 be2; do
  printf '%-7s %s\n' "$ns" "$(ip -n "$ns" -br addr | grep -Ev '^(lo|sit0)' | awk '{print $1, $3, $4}' | tr '\n' ' ')"
done

step "curl from client to the VIP (served by fe)"
www=$(mktemp -d)
echo "served by fe" > "$www/index.txt"
ip netns exec fe python3 -m http.server 80 --bind :: --directory "$www" >/dev/null 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null' EXIT
for i in $(seq 50); do ip netns exec fe ss -ltn | grep -q ':80 ' && break; sleep 0.2; done
ip netns exec client curl -sS --max-time 10 http://10.100.0.1/index.txt
ip netns exec client curl -sS --max-time 10 'http://[fd00:100::1]/index.txt'

step "demo done: module loaded, topology up (the migration demo arrives with the userlib/tools issue)"
