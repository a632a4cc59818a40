#!/usr/bin/env bash
# install-test-deps.sh — install the Debian packages moat's integration tests
# run against (a real Postfix as the upstream MTA, swaks as an SMTP client,
# python3 for helper scripts).
#
# Does nothing when everything is present. Otherwise, as root, installs the
# missing packages non-interactively (no stdin needed; fine under CI=true);
# as any other user, prints the commands to run and exits 1.
#
# Usage: scripts/install-test-deps.sh
# Environment: MOAT_TEST_PACKAGES overrides TEST_PACKAGES below.
set -euo pipefail

# The packages, as "package:command" (the command that proves it is
# installed) or a bare "package" (checked with dpkg -s). Add rbldnsd,
# prometheus and tshark here as the tests come to need them.
TEST_PACKAGES="postfix:postfix swaks:swaks python3:python3 ca-certificates rbldnsd:rbldnsd tshark:tshark prometheus:prometheus"
TEST_PACKAGES="${MOAT_TEST_PACKAGES:-$TEST_PACKAGES}"

# postfix lives in /usr/sbin, which a non-root PATH often lacks.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

installed() { # package [command]
	if [ -n "${2:-}" ]; then
		command -v "$2" >/dev/null 2>&1
	else
		dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
	fi
}

missing=()
for entry in $TEST_PACKAGES; do
	pkg=${entry%%:*}
	cmd=
	[ "$entry" != "$pkg" ] && cmd=${entry#*:}
	installed "$pkg" "$cmd" || missing+=("$pkg")
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
	cmd=
	[ "$entry" != "$pkg" ] && cmd=${entry#*:}
	installed "$pkg" "$cmd" || still+=("$entry")
done
if [ ${#still[@]} -ne 0 ]; then
	log "still missing after installing: ${still[*]}"
	exit 1
fi
