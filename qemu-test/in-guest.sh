#!/usr/bin/env bash
# Runs inside the guest (virtme-ng): MODE is `suite`, `demo`, `bench` or `profile`. Results, logs
# and dmesg go to OUT, the folder shared with the host.
# Arguments: MODE OUT REPO KDIR TEST_TIMEOUT [FILTER, for bench the accelerator, for
# profile the runs as MECH:QUEUED,...]
set -uo pipefail
mode=$1 out=$2 repo=$3 kdir=$4 test_timeout=$5 filter=${6:-}
mkdir -p "$out"
exec > >(tee "$out/guest.log") 2>&1
echo "guest: $(uname -r), $(nproc) cpus"
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug 2>/dev/null
mkdir -p /run/netns
bin=$repo/target/release
# The YNL command line moved to pyynl/ after 6.12.
ynl=$kdir/tools/net/ynl/cli.py
[[ -f $ynl ]] || ynl=$kdir/tools/net/ynl/pyynl/cli.py
# Later schemas want genetlink family names in dashes; prism_sock keeps its name (as
# ovs_datapath does) and validates there under the legacy schema, which takes any name.
schema=$kdir/Documentation/netlink/genetlink.yaml
if python3 -c 'import sys, yaml; n = yaml.safe_load(open(sys.argv[1]))["properties"]["name"]; sys.exit("pattern" not in n and "$ref" not in n)' "$schema"; then
  schema=$kdir/Documentation/netlink/genetlink-legacy.yaml
fi
env_args=(--module "${PRISM_MODULE:-$repo/prism_sock.ko}" --spec "$repo/docs/netlink/prism_sock.yaml"
  --ynl "$ynl" --schema "$schema")
rc=0
case "$mode" in
  suite)
    "$bin/prism-guest-suite" suite "${env_args[@]}" --out "$out" --test-timeout "$test_timeout" ${filter:+--filter "$filter"} \
      ${PRISM_TEST_SKIP:+--skip "$PRISM_TEST_SKIP"} --repeat "${PRISM_TEST_REPEAT:-1}"
    rc=$?
    ;;
  demo)
    "$repo/qemu-test/demo.sh" "$repo" "$kdir"
    rc=$?
    ;;
  bench)
    "$bin/prism-guest-suite" bench "${env_args[@]}" --out "$out" --accel "${filter:-tcg}" ${PRISM_BENCH_ARGS:-}
    rc=$?
    ;;
  profile)
    # Where a hop's time goes: perf samples every CPU while one mechanism hops; the
    # report is flat (self time per symbol, kernel and module symbols from kallsyms),
    # in shares of the hop loop's own samples (idle CPUs sample too).
    runs=${filter:-module:0,repair:0,module:65536,repair:65536}
    for run in ${runs//,/ }; do
      mech=${run%%:*} queued=${run#*:}
      data=$out/perf-$mech-$queued.data
      # Recording starts disabled; the hop loop enables it once its set-up is done.
      ctl=/run/prism-perf-ctl-$mech-$queued   # a fifo: the shared $out cannot hold one
      mkfifo "$ctl"
      perf record -q -a -g -F 997 -e cpu-clock -D -1 --control "fifo:$ctl" -o "$data" -- \
        "$bin/prism-guest-suite" hop-loop "${env_args[@]}" --mech "$mech" --queued "$queued" \
        --hops 4000 --perf-ctl "$ctl" || rc=1
      rm -f "$ctl"
      # The hop loop's threads only (set-up runs in ip and nft processes).
      perf report -q -i "$data" --stdio --comms prism-guest-sui --no-children \
        --percentage relative --sort sym -g none --percent-limit 0.5 >"$out/profile-$mech-$queued.txt" 2>/dev/null
      perf report -q -i "$data" --stdio --comms prism-guest-sui --children \
        --percentage relative --sort sym -g none --percent-limit 2 >"$out/profile-$mech-$queued-children.txt" 2>/dev/null
      echo "== $mech, $queued bytes queued each way: self time by symbol"
      head -45 "$out/profile-$mech-$queued.txt"
      echo "== $mech, $queued bytes queued each way: time including callees"
      head -60 "$out/profile-$mech-$queued-children.txt"
    done
    ;;
esac
echo "$rc" > "$out/guest.rc"
if [[ -w /sys/kernel/debug/kmemleak ]]; then
  echo scan > /sys/kernel/debug/kmemleak; sleep 5; echo scan > /sys/kernel/debug/kmemleak
  cat /sys/kernel/debug/kmemleak > "$out/kmemleak.txt"
fi
dmesg > "$out/dmesg.txt"
exit "$rc"
