#!/usr/bin/env bash
# Installs everything prism-sock needs to build and test, skipping what is present.
# Idempotent: safe to run on every `make test` / `make demo`.
set -euo pipefail

APT_PKGS=(linux-source-6.12 clang lld llvm libclang-dev qemu-system-x86 bc flex bison
  libelf-dev libssl-dev cpio iproute2 nftables udev curl strace tcpdump python3-yaml
  python3-jsonschema kmod xz-utils make busybox-static wrk
  nginx-light linux-perf)
BINDGEN_VERSION=0.69.5
# KERNEL=7.3 needs LLVM >= 17 and bindgen >= 0.71.1 (its scripts/min-tool-version.sh);
# they are installed beside the defaults, which the 6.12 kernel keeps using.
if [[ ${KERNEL:-6.12} == 7.3 ]]; then
  APT_PKGS+=(clang-19 lld-19 llvm-19 libclang-19-dev)
fi

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # nginx is only run inside the guest (the benchmark's reverse proxy): keep its
  # package from starting a service on this host.
  guard=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ -n $guard ]] && rm -f /usr/sbin/policy-rc.d
fi

for component in rust-src clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    echo "setup: adding $component"
    rustup component add "$component"
  fi
done

if ! command -v bindgen >/dev/null || ! bindgen --version 2>/dev/null | grep -q " $BINDGEN_VERSION"; then
  echo "setup: installing bindgen-cli $BINDGEN_VERSION"
  cargo install bindgen-cli --version "$BINDGEN_VERSION" --locked --quiet
fi

new_bindgen=${XDG_CACHE_HOME:-$HOME/.cache}/prism-sock/bindgen-0.71.1
if [[ ${KERNEL:-6.12} == 7.3 && ! -x $new_bindgen/bin/bindgen ]]; then
  echo "setup: installing bindgen-cli 0.71.1 for the 7.3 kernel into $new_bindgen"
  cargo install bindgen-cli --version 0.71.1 --locked --quiet --root "$new_bindgen"
fi

if ! command -v vng >/dev/null; then
  echo "setup: installing virtme-ng"
  pip install --quiet virtme-ng
fi
