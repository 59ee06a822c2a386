#!/usr/bin/env bash
# The demo, run inside the guest by in-guest.sh: L7 direct server return on the
# embedded topology. Loads the module, builds client -- l4 -- {fe, be1, be2}, starts
# prism-steerd in l4 and prism-node on the three nodes, then fetches objects through
# the VIP with clients nobody here wrote (Python's http.client and ssl, curl, wrk) over
# IPv4 and IPv6, HTTP and HTTPS (TLS ends in kernel TLS, which moves with the
# connection): each request is answered by the object's owner, the front node relays no
# response byte, every body's digest is checked, and once the clients are done every
# SOCK_RELEASED event has emptied prism-steerd's sets. Arguments: REPO KDIR
set -euo pipefail
repo=$1 kdir=$2
bin=$repo/target/release
run=$(mktemp -d /tmp/prism-demo.XXXXXX)
step() { printf '\n== %s\n' "$*"; }
fail() { echo "DEMO FAILED: $*"; exit 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

step "load the module"
insmod "$repo/prism_sock.ko"
"$bin/prismctl" status

step "topology: client -- l4 -- {fe, be1, be2}; every node holds the VIP, l4 routes it to fe"
"$bin/prism-guest-suite" topology-up
for ns in client l4 fe be1 be2; do
  printf '%-7s %s\n' "$ns" "$(ip -n "$ns" -br addr | grep -Ev '^(lo|sit0)' | awk '{print $1, $3, $4}' | tr '\n' ' ')"
done

step "start prism-steerd in l4 and prism-node on fe, be1, be2 (shared secret in $run/cluster.json; HTTPS with a demo CA in $run/tls)"
conf=$run/cluster.json
"$bin/prism-node" tls-cert --out "$run/tls" --name prism.test --name 10.100.0.1 --name fd00:100::1
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077; sed "s/@SECRET@/$secret/" "$repo/qemu-test/cluster.json" > "$conf")
ip netns exec l4 "$bin/prism-steerd" --config "$conf" 2> "$run/steerd.log" & pids+=($!)
for i in $(seq 50); do ip netns exec l4 ss -ltn | grep -q ':7000 ' && break; sleep 0.1; done
for n in fe be1 be2; do
  ip netns exec "$n" "$bin/prismctl" monitor --json > "$run/events-$n.jsonl" 2>&1 & pids+=($!)
  ip netns exec "$n" "$bin/prism-node" run --config "$conf" --name "$n" \
    --tls-cert "$run/tls/cert.pem" --tls-key "$run/tls/key.pem" 2> "$run/node-$n.log" & pids+=($!)
done
for i in $(seq 100); do
  up=0
  for n in fe be1 be2; do ip netns exec "$n" ss -ltn | grep -q '10.100.0.1:443 ' && up=$((up + 1)); done
  [[ $up == 3 ]] && ip netns exec l4 ss -tn | grep -c ':7000 ' | grep -q 3 && break
  sleep 0.2
done
cat "$run/steerd.log" "$run"/node-*.log

step "who owns what (consistent hashing over fe, be1, be2)"
keys=(obj-1 obj-0 obj-2 obj-5 obj-3 obj-8 obj-4)
"$bin/prism-node" digest --config "$conf" "${keys[@]}" | tee "$run/digests.txt"

step "one keep-alive connection, seven requests (Python http.client; HTTPS: Python ssl), IPv4 then IPv6"
for vip in 10.100.0.1 fd00:100::1; do for scheme in http https; do
  echo "-- $scheme over $vip"
  ip netns exec client python3 - "$vip" "$run/digests.txt" "$scheme" "$run/tls/ca.pem" <<'PY' || fail "keep-alive sequence ($scheme) over $vip"
import hashlib, http.client, ssl, subprocess, sys
vip, digests = sys.argv[1], {l.split()[0]: l.split() for l in open(sys.argv[2])}
scheme, ca = sys.argv[3], sys.argv[4]
def fe_tx():
    out = subprocess.run(["ip", "netns", "exec", "fe", "cat", "/sys/class/net/eth0/statistics/tx_bytes"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)
if scheme == "https":
    # TLS ends in kernel TLS on fe; the session moves with the connection to each owner.
    conn = http.client.HTTPSConnection(vip, 443, timeout=20, context=ssl.create_default_context(cafile=ca))
else:
    conn = http.client.HTTPConnection(vip, 80, timeout=20)
bad = 0
print(f"{'key':7} {'owner':5} {'served by':9} {'hops':4} {'status':6} {'bytes':>8}  digest  fe sent (of it relayed)")
for key, (_, size, owner, digest) in digests.items():
    before = fe_tx()
    conn.request("GET", f"/objects/{key}")
    r = conn.getresponse()
    body = r.read()
    sent = fe_tx() - before
    ok = hashlib.sha256(body).hexdigest() == digest
    by = r.getheader("X-Served-By")
    relayed = 0 if by != "fe" else None
    print(f"{key:7} {owner:5} {by:9} {r.getheader('X-Prism-Hops'):>4} {r.status:6} {len(body):8}  "
          f"{'ok' if ok else 'BAD':6}  {sent} B" + ("  (response bytes relayed: 0)" if by != "fe" else "  (fe owns it)"))
    if r.status != 200 or not ok or by != owner or (by != "fe" and sent >= len(body)):
        bad += 1
if scheme == "https":
    print(f"TLS: {conn.sock.version()} {conn.sock.cipher()[0]}, verified against the demo CA")
conn.close()
sys.exit(1 if bad else 0)
PY
done; done

step "curl: one keep-alive connection for all seven keys, HTTP and HTTPS (--cacert), IPv4 and IPv6"
for url in http://10.100.0.1 'http://[fd00:100::1]' https://10.100.0.1 'https://[fd00:100::1]'; do
  args=()
  for k in "${keys[@]}"; do args+=("$url/objects/$k" -o "$run/body-$k"); done
  ip netns exec client curl -sS --max-time 60 --cacert "$run/tls/ca.pem" \
    -w '%{url}  status %{http_code}  %{size_download} B  new connections %{num_connects}  served by %header{x-served-by}\n' \
    "${args[@]}" | tee "$run/curl.txt"
  for k in "${keys[@]}"; do
    want=$(awk -v k="$k" '$1 == k {print $4}' "$run/digests.txt")
    got=$(sha256sum "$run/body-$k" | cut -d' ' -f1)
    [[ $got == "$want" ]] || fail "curl: digest of $k"
  done
  [[ $(grep -c 'new connections 1' "$run/curl.txt") == 1 ]] || fail "curl did not keep one connection"
  echo "all ${#keys[@]} digests match; one TCP connection served by $(awk '{print $NF}' "$run/curl.txt" | sort -u | tr '\n' ' ')"
done

step "wrk: 20 keep-alive connections for 5 s over the whole catalogue, IPv4 and IPv6"
cat > "$run/keys.lua" <<'LUA'
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/objects/obj-" .. (i % 24))
end
LUA
for url in http://10.100.0.1/ 'http://[fd00:100::1]/'; do
  ip netns exec client wrk -t2 -c20 -d5s -s "$run/keys.lua" "$url" | tee "$run/wrk.txt"
  if grep -Eq 'Non-2xx|Socket errors' "$run/wrk.txt"; then fail "wrk saw errors"; fi
done

step "node counters (GET /stats on each node's admin port)"
declare -A addr=([fe]=10.0.1.2 [be1]=10.0.2.2 [be2]=10.0.3.2)
for n in fe be1 be2; do
  ip netns exec "$n" curl -sS "http://${addr[$n]}:7101/stats"; echo
done

step "release events: one sock-released per migrated connection, then the steering sets empty"
for i in $(seq 100); do
  left=$(ip netns exec l4 nft -j list ruleset | python3 -c '
import json, sys
d = json.load(sys.stdin)["nftables"]
print(sum(len(o["map"].get("elem", [])) for o in d if "map" in o) + sum(len(o["set"].get("elem", [])) for o in d if "set" in o))')
  [[ $left == 0 ]] && break
  sleep 0.2
done
for n in fe be1 be2; do
  printf '%-4s imported %4d  exported %4d  released %4d\n' "$n" \
    "$(grep -c '"kind":"imported"' "$run/events-$n.jsonl")" \
    "$(grep -c '"kind":"exported"' "$run/events-$n.jsonl")" \
    "$(grep -c '"kind":"released"' "$run/events-$n.jsonl")"
done
echo "last release on be2: $(grep '"kind":"released"' "$run/events-be2.jsonl" | tail -1)"
ip netns exec l4 nft list table inet prism
[[ $left == 0 ]] || fail "$left steering entries left in l4"
echo "prism-steerd's flow and hold sets are empty again"
grep -h "refused\|failed\|lost" "$run"/*.log || true

step "demo done"
