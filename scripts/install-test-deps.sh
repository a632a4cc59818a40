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
[ ${#missing[@]} -eq 0 ] && exit 0

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
