#!/usr/bin/env bash
# Boots the test kernel under virtme-ng and runs MODE (`suite`, `demo`, `bench` or
# `profile`) in it.
# Prints each test's result and one line `N passed, N failed`; fails if any test
# failed, the guest did not boot, the suite did not run, or dmesg shows a kernel splat.
# `bench` writes docs/benchmarks.{md,svg,json} from the guest's results.
# Usage: run-guest.sh suite|demo|bench|profile [FILTER]
# PRISM_TEST_FILTER picks tests by name; PRISM_TEST_REPEAT=N runs each of them N times;
# PRISM_FUZZ_REQUESTS and PRISM_NETEM_HOPS size the fuzz and lossy-hop tests, and
# PRISM_TEST_TIMEOUT (seconds) each test's limit (`make fuzz`, `make test-long`).
# PRISM_BENCH_ARGS runs part of the benchmark (e.g. `--parts handoff
# --handoff-connections 1`) and prints it without writing docs/.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
mode=${1:?usage: run-guest.sh suite|demo|bench|profile [FILTER]}
filter=${2:-${PRISM_TEST_FILTER:-}}
# PRISM_KDIR, PRISM_KIMG and PRISM_MODULE run another kernel than the test kernel
# (`make stock-kernel-test`): its source tree (for YNL), image and module.
kdir=${PRISM_KDIR:-$("$here/build-kernel.sh")} || exit 1
kimg=${PRISM_KIMG:-$kdir/arch/x86/boot/bzImage}
module=${PRISM_MODULE:-$repo/prism_sock.ko}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/prism-sock
out=$(mktemp -d /tmp/prism-guest.XXXXXX)
# Per-test limit: the longest test, bench_smoke, took 150-190 s on slower instances
# before its HTTPS modes, 203 s with them here. The whole suite took 49 min here.
# KASAN and lockdep under TCG run several times slower.
if [[ ${KERNEL_FLAVOR:-default} == debug ]]; then test_timeout=600 timeout_s=4500; else test_timeout=360 timeout_s=4500; fi
[[ $mode == bench ]] && timeout_s=5400
timeout_s=${GUEST_TIMEOUT:-$timeout_s}
test_timeout=${PRISM_TEST_TIMEOUT:-$test_timeout}

# KVM is used only when a probe boot on this machine showed that it works; the result is
# cached (KVM hangs at boot on some hosts, see shared/TOOLCHAIN.md).
accel=(--disable-kvm)
probe=$cache/kvm-probe
if [[ ! -f $probe ]]; then
  echo "run-guest: probing KVM (once)"
  if [[ -w /dev/kvm ]] && timeout 60 vng --run "$kimg" --user root \
      --memory 512M --exec "true" </dev/null >/dev/null 2>&1; then
    echo kvm >"$probe"
  else
    echo tcg >"$probe"
  fi
fi
[[ $(cat "$probe") == kvm ]] && accel=()
[[ $mode == bench ]] && filter=$(cat "$probe")
echo "run-guest: booting $(basename "$kdir") ($(cat "$probe")), results in $out"

start=$SECONDS
timeout "$timeout_s" vng --run "$kimg" "${accel[@]}" --user root \
  --memory 2G --cpus 2 --rwdir "$out" \
  --exec "PRISM_MODULE=$module PRISM_TEST_REPEAT=${PRISM_TEST_REPEAT:-1} PRISM_TEST_SKIP=${PRISM_TEST_SKIP:-} PRISM_FUZZ_REQUESTS=${PRISM_FUZZ_REQUESTS:-20000} PRISM_NETEM_HOPS=${PRISM_NETEM_HOPS:-} PRISM_BENCH_ARGS='${PRISM_BENCH_ARGS:-}' $here/in-guest.sh $mode $out $repo $kdir $test_timeout $filter" </dev/null >"$out/console.log" 2>&1
vng_rc=$?
echo "run-guest: guest finished in $((SECONDS - start)) s (exit $vng_rc)"

# Any kernel splat fails the run, whatever the tests said.
splat=$(grep -E "BUG:|WARNING:|Oops|KASAN:|general protection|possible (circular|recursive) locking|INFO: task .* blocked|rcu_sched self-detected stall|Call Trace" \
  "$out/dmesg.txt" 2>/dev/null)
leaks=$(grep -c "unreferenced object" "$out/kmemleak.txt" 2>/dev/null || true)

if [[ $mode == profile ]]; then
  cat "$out/guest.log"
  [[ -n $splat ]] && { echo "run-guest: kernel splat in dmesg:"; echo "$splat"; exit 1; }
  echo "run-guest: perf data and reports in $out"
  [[ $(cat "$out/guest.rc" 2>/dev/null) == 0 ]]
  exit
fi

if [[ $mode == demo ]]; then
  cat "$out/guest.log" 2>/dev/null || cat "$out/console.log"
  [[ -n $splat ]] && { echo "run-guest: kernel splat in dmesg:"; echo "$splat"; exit 1; }
  [[ -f $out/guest.rc && $(cat "$out/guest.rc") == 0 ]] || { echo "run-guest: demo failed"; exit 1; }
  exit 0
fi

if [[ $mode == bench ]]; then
  [[ -n $splat ]] && { echo "run-guest: kernel splat in dmesg:"; echo "$splat"; exit 1; }
  [[ -f $out/bench.json && $(cat "$out/guest.rc" 2>/dev/null) == 0 ]] || {
    cat "$out/guest.log" 2>/dev/null || tail -50 "$out/console.log"; echo "run-guest: bench failed"; exit 1; }
  cat "$out/guest.log"
  [[ -n ${PRISM_BENCH_ARGS:-} ]] && { echo "run-guest: partial run, docs/ left as they are"; exit 0; }
  "$repo/target/release/prism-guest-suite" bench-report "$out/bench.json" --dir "$repo/docs" || exit 1
  echo "run-guest: wrote docs/benchmarks.md, docs/benchmarks.svg, docs/benchmarks.json"
  exit 0
fi

if [[ ! -f $out/results.txt ]]; then
  echo "run-guest: the suite did not run (guest exit $vng_rc); console:"
  tail -50 "$out/console.log"
  echo "0 passed, 1 failed"
  exit 1
fi
cat "$out/results.txt"
passed=$(grep -c '^PASS ' "$out/results.txt")
failed=$(grep -c '^FAIL ' "$out/results.txt")
grep '^FAIL ' "$out/results.txt" | while read -r _ name _; do
  echo "---- $name log:"; cat "$out/logs/$name.log"
done
if [[ ! -s $out/dmesg.txt ]]; then
  echo "---- FAIL dmesg: none captured (the guest did not reach the end of its script)"; failed=$((failed + 1))
elif [[ -n $splat ]]; then
  echo "---- FAIL dmesg: kernel splat:"; echo "$splat" | head -40; failed=$((failed + 1))
else
  passed=$((passed + 1)); echo "PASS dmesg_clean (no BUG/WARNING/Oops/KASAN/lockdep)"
fi
if [[ ${leaks:-0} -gt 0 ]]; then
  echo "---- FAIL kmemleak: $leaks unreferenced objects"; head -40 "$out/kmemleak.txt"; failed=$((failed + 1))
fi
if [[ ! -f $out/guest.rc ]]; then
  echo "---- FAIL suite_finished: the guest stopped before the suite ended (timeout or crash); console tail:"
  tail -30 "$out/console.log"; failed=$((failed + 1))
fi
if ((passed + failed == 1)); then
  echo "run-guest: no test ran"; failed=$((failed + 1))
fi
skipped=$(grep -c '^SKIP ' "$out/results.txt")
((skipped > 0)) && echo "$skipped left out (PRISM_TEST_SKIP)"
echo "$passed passed, $failed failed"
((failed == 0))
