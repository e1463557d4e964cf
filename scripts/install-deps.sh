#!/usr/bin/env bash
# Installs every package mailkms needs to build and test, from Debian 12's
# archive. Safe to run again: apt-get skips what is already there.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config
  # the S/MIME engine: OpenSSL 3 for CMS, GMime 3 for MIME
  libssl-dev openssl ca-certificates libgmime-3.0-dev
  # the keystore: SQLite for storage, nlohmann-json for records and the
  # protocol, Boost.Asio for the daemon (1.81: bookworm's 1.74 conflicts),
  # toml++ for mailkms.conf
  libsqlite3-dev nlohmann-json3-dev libboost1.81-dev libtomlplusplus-dev
  # the keystore on PostgreSQL, for sites that share one keystore between
  # several hosts: libpq, PostgreSQL's own client library
  libpq-dev
  # mailkmsctl's and the daemons' command lines
  libcli11-dev
  # the daemons tell systemd when they are ready, reloading or stopping
  # (Type=notify units): libsystemd's sd_notify
  libsystemd-dev
  # the man pages: scdoc turns man/*.scd into troff at build time; groff
  # (tests) renders them with every warning on
  scdoc groff-base
  # the milter: libmilter for the protocol, spdlog for its log lines
  # (stderr under systemd, or syslog), libcurl for outside CAs' CRLs
  libmilter-dev libspdlog-dev libcurl4-openssl-dev
  # tests: Catch2, a real Postfix with swaks to send it mail, miltertest
  # to drive the milter without an MTA, python3 to speak the keystore's
  # socket protocol where mailkmsctl has no command (gateway operations),
  # sqlite3 to tamper with the keystore's database as an attacker would
  catch2 postfix swaks miltertest python3 sqlite3
  # tests: GnuPG's gpgsm, a second S/MIME implementation besides
  # OpenSSL, reads what mailkms signs as a user's mail program would
  gpgsm
  # tests: curl scrapes the metrics endpoints, and prometheus_client's own
  # parser (Debian's Python) reads what they serve
  curl python3-prometheus-client
  # tests: a real PostgreSQL server (private clusters from initdb, never the
  # system's) and psql, to run the keystore suites on PostgreSQL too
  postgresql
  # tests: SMTP AUTH in the private Postfix (Cyrus SASL: saslpasswd2 for a
  # sasldb of its own, the PLAIN and LOGIN mechanisms), so that who may
  # sign as whom is tested with a real login
  sasl2-bin libsasl2-modules
  # tests: a real Sendmail for the milter. Its packages conflict with
  # Postfix, so they are unpacked apart (below); m4 builds its sendmail.cf,
  # and these are the libraries it links that Postfix does not bring
  m4 libwrap0 liblockfile1 libnsl2 libdb5.3 libldap-2.5-0 libsasl2-2
  # tests: a real Exim in front of the proxy, unpacked apart for the same
  # reason; the libraries it links that Postfix does not bring
  libidn12 libgnutls-dane0
  # tests: OpenDKIM beside the milter, and python3-dkim to verify what it
  # signed (Debian's system Python)
  opendkim opendkim-tools python3-dkim
  # fuzzing (scripts/fuzz.sh): clang, and libFuzzer with clang's sanitizer
  # runtimes, which Debian packages apart from the compiler
  clang libclang-rt-14-dev
  # static checks (scripts/lint.sh)
  clang-tidy cppcheck
  # the Debian package (scripts/package.sh): Debian's own tooling to build
  # it, lintian to check it
  debhelper dpkg-dev lintian
)

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Postfix without a system configuration: tests run private instances
  # from their own directories and never touch /etc/postfix/main.cf.
  printf '%s\n' 'postfix postfix/main_mailer_type select No configuration' \
    'postfix postfix/mailname string localhost.localdomain' | $sudo debconf-set-selections
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# unpack DIR PACKAGE…: Debian's packages, downloaded and unpacked into DIR
# (never installed), unless DIR already holds them.
unpack() {
  local root=$1 debs
  shift
  debs=$(mktemp -d)
  (cd "$debs" && $sudo apt-get download -q "$@" 2> /dev/null) ||
    { $sudo apt-get update -q && (cd "$debs" && $sudo apt-get download -q "$@"); }
  $sudo mkdir -p "$root"
  for deb in "$debs"/*.deb; do $sudo dpkg-deb -x "$deb" "$root"; done
  $sudo rm -rf "$debs"
}

# Sendmail and Exim for the integration tests, unpacked where they look for
# them: installed, either would remove Postfix.
sendmail_root=${MAILKMS_SENDMAIL_ROOT:-/var/lib/mailkms-tests/sendmail}
if [ ! -x "$sendmail_root/usr/libexec/sendmail/sendmail" ]; then
  unpack "$sendmail_root" sendmail-bin sendmail-base sendmail-cf
  [ -x "$sendmail_root/usr/libexec/sendmail/sendmail" ] ||
    { echo "$0: Sendmail did not unpack into $sendmail_root" >&2; exit 1; }
fi
exim_root=${MAILKMS_EXIM_ROOT:-/var/lib/mailkms-tests/exim}
if [ ! -x "$exim_root/usr/sbin/exim4" ]; then
  unpack "$exim_root" exim4-daemon-light exim4-base
  [ -x "$exim_root/usr/sbin/exim4" ] || { echo "$0: Exim did not unpack into $exim_root" >&2; exit 1; }
fi
