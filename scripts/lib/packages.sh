# Debian 12 packages mailtap needs, sourced by scripts/run, scripts/test, scripts/fuzz,
# scripts/bench and scripts/bench-index. BUILD_PACKAGES: compile and run the relay (libsystemd for sd_notify, help2man
# for the man page, libsqlite3 for the capture index, libpcap for `mailtap export pcap`), and
# package it: `cpack -G DEB` (README "Installing as a service") runs dpkg-shlibdeps (dpkg-dev,
# which build-essential brings) and `file` (CPACK_DEBIAN_PACKAGE_SHLIBDEPS).
# TEST_PACKAGES: the real peers the tests drive, and the packaging checks
# (dpkg-deb and dpkg-shlibdeps from dpkg-dev, and `file`, which CPack's shlibdeps step runs;
# systemd-analyze from systemd, with man-db for the unit's Documentation=; /bin/kill from
# procps and adduser for the unit and the maintainer scripts: packaging/README.md; tshark reads what
# `mailtap export pcap` writes; promtool from prometheus and python3-prometheus-client, the two
# checks of /metrics: admin/README.md; chromium, and node with npm, for the web UI's browser
# tests: tests/ui/README.md; python3-pytest runs clients/python's tests, which `pip install`
# that package, built by python3-setuptools, into a python3-venv).  FUZZ_PACKAGES: clang and libFuzzer with the sanitizer runtimes (tests/fuzz/).
# BENCH_PACKAGES: the peers the benchmark compares against.
BUILD_PACKAGES=(
  build-essential cmake pkg-config
  libboost1.81-dev libboost-json1.81-dev
  libssl-dev libspdlog-dev libfmt-dev libtomlplusplus-dev libcli11-dev libsystemd-dev
  libsqlite3-dev libpcap-dev
  help2man
  file
)
TEST_PACKAGES=(
  libgtest-dev libgmock-dev
  swaks libnet-ssleay-perl libio-socket-ssl-perl libio-socket-inet6-perl postfix python3-aiosmtpd openssl
  iproute2 nftables
  dpkg-dev file systemd man-db procps adduser
  tshark
  prometheus python3-prometheus-client
  chromium
  python3-pytest python3-setuptools python3-venv
)
# Debian's nodejs and npm, unless a node with its own npm is there already (a nodejs package
# from elsewhere bundles npm, and Debian's npm package would conflict with it).
command -v npm >/dev/null 2>&1 || TEST_PACKAGES+=(nodejs npm)
FUZZ_PACKAGES=(clang-14 libfuzzer-14-dev libclang-rt-14-dev)
BENCH_PACKAGES=(haproxy postfix)

# install_packages PKG...: apt-get install whatever of PKG is missing.
# postfix is preseeded to "No configuration" so no mail daemon is set up or started, and
# wireshark-common (tshark's) not to install dumpcap setuid, which it would ask about. No
# service starts during the install (a policy-rc.d that says no, unless one exists), and the
# prometheus daemon, which the tests do not want (only its promtool), stays disabled.
install_packages() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# mailtap scripts/lib/packages.sh: no service starts while packages install\nexit 101\n' |
      $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && made_policy=1
  fi
  local rc=0
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    rc=$?
  [ -n "$made_policy" ] && $sudo rm -f "$policy"
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  return $rc
}
