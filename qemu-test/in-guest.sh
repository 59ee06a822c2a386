#!/usr/bin/env bash
# Runs inside the guest (virtme-ng): MODE is `suite`, `demo` or `bench`. Results, logs
# and dmesg go to OUT, the folder shared with the host.
# Arguments: MODE OUT REPO KDIR TEST_TIMEOUT [FILTER, or for bench the accelerator]
set -uo pipefail
mode=$1 out=$2 repo=$3 kdir=$4 test_timeout=$5 filter=${6:-}
mkdir -p "$out"
exec > >(tee "$out/guest.log") 2>&1
echo "guest: $(uname -r), $(nproc) cpus"
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
mkdir -p /run/netns
bin=$repo/target/release
env_args=(--module "$repo/prism_sock.ko" --spec "$repo/docs/netlink/prism_sock.yaml"
  --ynl "$kdir/tools/net/ynl/cli.py" --schema "$kdir/Documentation/netlink/genetlink.yaml")
rc=0
case "$mode" in
  suite)
    "$bin/prism-guest-suite" suite "${env_args[@]}" --out "$out" --test-timeout "$test_timeout" ${filter:+--filter "$filter"}
    rc=$?
    ;;
  demo)
    "$repo/qemu-test/demo.sh" "$repo" "$kdir"
    rc=$?
    ;;
  bench)
    "$bin/prism-guest-suite" bench "${env_args[@]}" --out "$out" --accel "${filter:-tcg}"
    rc=$?
    ;;
esac
echo "$rc" > "$out/guest.rc"
if [[ -w /sys/kernel/debug/kmemleak ]]; then
  echo scan > /sys/kernel/debug/kmemleak; sleep 5; echo scan > /sys/kernel/debug/kmemleak
  cat /sys/kernel/debug/kmemleak > "$out/kmemleak.txt"
fi
dmesg > "$out/dmesg.txt"
exit "$rc"
