#!/usr/bin/env bash
# install-test-deps.sh — install the Debian packages moat's integration tests
# run against (a real Postfix as the upstream MTA, swaks as an SMTP client,
# python3 for helper scripts, rbldnsd, tshark, prometheus) and the modules
# those programs load for what the tests ask of them (swaks --tls needs
# Perl's Net::SSLeay; python3's smtplib/ssl), which a --no-install-recommends
# install leaves out.
#
# Does nothing when everything is present. Otherwise, as root, installs the
# missing packages non-interactively (no stdin needed; fine under CI=true);
# as any other user, prints the commands to run and exits 1.
#
# Usage: scripts/install-test-deps.sh
# Environment: MOAT_TEST_PACKAGES overrides TEST_PACKAGES below.
set -euo pipefail

# The packages, each with the check that proves the tests can use it:
#   package                    installed (dpkg)
#   package:command            the command is on PATH
#   package:perl=Mod::Name     perl -MMod::Name -e1 loads it
#   package:python3=mod,mod    python3 -c 'import mod,mod' works
# A package may appear more than once with different checks; it is
# installed when any of its checks fails.
#
# What the tests use, and why each check is there:
# - postfix, smtp-sink: internal/postfixtest's throwaway upstream; bench/e2e.
# - swaks: the SMTP client of the e2e tests. Its --tls (capture/selfmade_test.go,
#   cmd/moat/observability_e2e_test.go, e2e_test.go) needs Net::SSLeay
#   (swaks --support: "TLS not available: requires Net::SSLeay"), which is
#   only a Recommends of swaks, so --no-install-recommends leaves it out.
#   IO::Socket::SSL (Perl's TLS sockets, built on Net::SSLeay) is checked too.
# - python3 with smtplib, ssl and email (cmd/moat/e2e_test.go,
#   capture/selfmade_test.go run `python3 -c` SMTP clients with STARTTLS).
# - rbldnsd (internal/rbldnstest), tshark and dumpcap (capture tests,
#   bench/e2e), promtool and prometheus (openmetrics and dashboard tests).
TEST_PACKAGES="postfix:postfix postfix:smtp-sink swaks:swaks
 libnet-ssleay-perl:perl=Net::SSLeay libio-socket-ssl-perl:perl=IO::Socket::SSL
 python3:python3 python3:python3=smtplib,ssl,email.message
 ca-certificates rbldnsd:rbldnsd tshark:tshark wireshark-common:dumpcap
 prometheus:prometheus prometheus:promtool"
TEST_PACKAGES="${MOAT_TEST_PACKAGES:-$TEST_PACKAGES}"

# postfix lives in /usr/sbin, which a non-root PATH often lacks.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

installed() { # package [check]
	case "${2:-}" in
	"") dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' ;;
	perl=*) perl -M"${2#perl=}" -e1 >/dev/null 2>&1 ;;
	python3=*) python3 -c "import ${2#python3=}" >/dev/null 2>&1 ;;
	*) command -v "$2" >/dev/null 2>&1 ;;
	esac
}

missing=()
for entry in $TEST_PACKAGES; do
	pkg=${entry%%:*}
	check=
	[ "$entry" != "$pkg" ] && check=${entry#*:}
	installed "$pkg" "$check" && continue
	log "not usable: $pkg${check:+ ($check)}"
	case " ${missing[*]} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
done
# Nothing missing: go on to the sections after the package list (Exim).
if [ ${#missing[@]} -ne 0 ]; then # ---- package list: install ----

# Postfix's package asks how to configure the system MTA; "No configuration"
# leaves /etc/postfix/main.cf unwritten and the system instance unstarted —
# the tests start private instances of their own.
preseed="postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost"
install_cmd="apt-get install -y --no-install-recommends ${missing[*]}"

if [ "$(id -u)" -ne 0 ]; then
	log "missing packages: ${missing[*]}"
	log "run as root (or run this script with sudo):"
	case " ${missing[*]} " in
	*" postfix "*)
		while IFS= read -r line; do
			printf "  echo '%s' | sudo debconf-set-selections\n" "$line" >&2
		done <<<"$preseed"
		;;
	esac
	printf '  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive %s\n' "$install_cmd" >&2
	exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
	log "missing packages: ${missing[*]}, and this is not a Debian-like system (no apt-get); install them by hand"
	exit 1
fi

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if command -v debconf-set-selections >/dev/null 2>&1; then
	printf '%s\n' "$preseed" | debconf-set-selections
fi
apt-get update </dev/null || { log "apt-get update failed"; exit 1; }
# confold/confdef: never stop to ask about a changed configuration file.
apt-get install -y --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	"${missing[@]}" </dev/null || { log "apt-get install failed"; exit 1; }

# Should the package have started the system Postfix after all, stop it: it
# would hold port 25. This touches only the default instance (/etc/postfix),
# never a test's private one.
case " ${missing[*]} " in
*" postfix "*)
	postfix stop >/dev/null 2>&1 || service postfix stop >/dev/null 2>&1 || true
	;;
esac

still=()
for entry in $TEST_PACKAGES; do
	pkg=${entry%%:*}
	check=
	[ "$entry" != "$pkg" ] && check=${entry#*:}
	installed "$pkg" "$check" || still+=("$entry")
done
if [ ${#still[@]} -ne 0 ]; then
	log "still missing after installing: ${still[*]}"
	exit 1
fi
fi # ---- package list: end ----

# ---- Exim 4 as an unpacked test upstream (internal/eximtest) ----
# Debian's MTA packages conflict (Provides/Conflicts mail-transport-agent):
# "apt-get install exim4-daemon-light" would remove Postfix. So Exim is not
# installed but downloaded and unpacked with dpkg-deb -x into a cache
# directory, and internal/eximtest runs the binary from there. The cache is
# /var/cache/moat-test/exim: outside the repository, so it survives git clean
# and serves every checkout, and under /var/cache, the place for data that
# can be fetched again (FHS 3.0 section 5.5). MOAT_EXIM_ROOT moves the
# unpacked tree (eximtest reads the same variable); the .deb is kept beside it.
# Ready means exactly what eximtest checks before it starts Exim: the
# unpacked binary exists, ldd finds all its shared libraries, and the
# Debian-exim user (Exim's compiled-in EXIM_USER) exists.
EXIM_ROOT="${MOAT_EXIM_ROOT:-/var/cache/moat-test/exim/root}"
EXIM_DEBS="$(dirname "$EXIM_ROOT")/debs"
EXIM_BIN="$EXIM_ROOT/usr/sbin/exim4"
EXIM_USER=Debian-exim

exim_ready() {
	[ -x "$EXIM_BIN" ] || return 1
	ldd "$EXIM_BIN" 2>&1 | grep -q 'not found' && return 1
	getent passwd "$EXIM_USER" >/dev/null
}

if ! exim_ready; then
	if [ "$(id -u)" -ne 0 ]; then
		log "Exim test upstream not ready in $EXIM_ROOT; run this script as root (sudo $0)"
		exit 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		log "Exim test upstream missing, and this is not a Debian-like system; unpack exim4-daemon-light into $EXIM_ROOT by hand"
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	mkdir -p "$EXIM_DEBS"
	# apt-get download fetches as _apt when it may write the directory.
	getent passwd _apt >/dev/null && chown _apt "$EXIM_DEBS"
	exim_deb() { find "$EXIM_DEBS" -maxdepth 1 -name 'exim4-daemon-light_*.deb' | sort -V | tail -n 1; }
	if [ -z "$(exim_deb)" ]; then
		log "downloading exim4-daemon-light into $EXIM_DEBS"
		(cd "$EXIM_DEBS" && apt-get download exim4-daemon-light </dev/null) ||
			{ apt-get update </dev/null && (cd "$EXIM_DEBS" && apt-get download exim4-daemon-light </dev/null); } ||
			{ log "apt-get download exim4-daemon-light failed"; exit 1; }
	fi
	deb=$(exim_deb)
	if [ ! -x "$EXIM_BIN" ]; then
		log "unpacking $deb into $EXIM_ROOT"
		rm -rf "$EXIM_ROOT.new"
		dpkg-deb -x "$deb" "$EXIM_ROOT.new" || { log "dpkg-deb -x $deb failed"; exit 1; }
		rm -rf "$EXIM_ROOT"
		mv "$EXIM_ROOT.new" "$EXIM_ROOT"
	fi
	# The shared libraries are ordinary packages that install beside
	# Postfix: the library packages among the .deb's Depends (first of each
	# set of alternatives, version constraint dropped) that are missing.
	libs=()
	for dep in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' | grep '^lib'); do
		dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'ok installed' || libs+=("$dep")
	done
	if [ ${#libs[@]} -ne 0 ]; then
		log "installing Exim's libraries: ${libs[*]}"
		apt-get install -y --no-install-recommends "${libs[@]}" </dev/null ||
			{ apt-get update </dev/null && apt-get install -y --no-install-recommends "${libs[@]}" </dev/null; } ||
			{ log "apt-get install ${libs[*]} failed"; exit 1; }
	fi
	if ! getent passwd "$EXIM_USER" >/dev/null; then
		log "creating system user $EXIM_USER"
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$EXIM_USER" || { log "useradd $EXIM_USER failed"; exit 1; }
	fi
	if ! exim_ready; then
		log "Exim test upstream still not ready in $EXIM_ROOT:"
		ldd "$EXIM_BIN" 2>&1 | grep 'not found' >&2 || true
		exit 1
	fi
fi
# ---- Exim: end ----
