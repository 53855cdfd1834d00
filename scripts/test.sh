#!/usr/bin/env bash
# Tern's test command (the one README.md names). Works on a fresh Debian machine of this
# kind: installs the real peers the tests talk to (swaks, Postfix's smtp-source, Python's
# aiosmtpd and dnslib, dkimpy and PyNaCl for the DKIM checks, authres for dkimpy's ARC signer, iproute2 for the network-namespace DNS test, mount for the tmpfs of
# the disk-fault tests, Dovecot's LMTP server and doveadm for the local-delivery tests;
# schemathesis for the admin API against its OpenAPI document;
# aiosmtpd also drives bench/chaos/run.py, which chaos_soak_short runs; Chromium, node
# and the pinned Playwright in testpeers/browser for the web viewer's browser test), then runs every
# test in the workspace. The tests need root (the namespace test creates one, the
# disk-fault tests mount tmpfs). A missing peer is a failure, never a silent skip: the
# interop tests check for each tool and fail loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the tests need root (network namespaces, tmpfs mounts)" >&2
  exit 1
fi

need_apt=()
command -v swaks >/dev/null || need_apt+=(swaks libnet-ssleay-perl)
command -v smtp-source >/dev/null || need_apt+=(postfix)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v knotd >/dev/null && command -v kdig >/dev/null || need_apt+=(knot knot-dnsutils)
command -v ldns-signzone >/dev/null || need_apt+=(ldnsutils)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need_apt+=(redis-server redis-tools)
{ command -v mount && command -v umount; } >/dev/null || need_apt+=(mount)
command -v dovecot >/dev/null && command -v doveadm >/dev/null || need_apt+=(dovecot-core)
[ -x /usr/lib/dovecot/lmtp ] || need_apt+=(dovecot-lmtpd)
perl -MNet::SSLeay -e1 2>/dev/null || need_apt+=(libnet-ssleay-perl)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
# OpenSSL reads the keys `tern dkim generate` writes, and writes one Tern must read
# (dkim_generate_then_check_against_published_records).
command -v openssl >/dev/null || need_apt+=(openssl)
command -v npm >/dev/null || need_apt+=(npm)
# The TLS report scenarios validate Tern's reports with the JSON Schema written from
# RFC 8460 (tls_reports_*, tls_report_*).
python3 -c 'import jsonschema' 2>/dev/null || need_apt+=(python3-jsonschema)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing test peers: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import aiosmtpd, dnslib' 2>/dev/null; then
  echo "== installing Python test peers: aiosmtpd dnslib"
  python3 -m pip install -q aiosmtpd dnslib
fi
# dkimpy (with PyNaCl for Ed25519) verifies Tern's DKIM signatures independently
# (the dkim_* scenarios).
if ! python3 -c 'import dkim, nacl' 2>/dev/null; then
  echo "== installing the DKIM verifier: dkimpy pynacl"
  python3 -m pip install -q dkimpy pynacl
fi
# authres: dkimpy's ARC signer (arc_sign) reads Authentication-Results with it; the
# arc_* scenarios seal with dkimpy as an upstream forwarder and verify Tern's seals.
if ! python3 -c 'import authres' 2>/dev/null; then
  echo "== installing the ARC signer's dependency: authres"
  python3 -m pip install -q authres
fi
# scramp: the client side of SCRAM-SHA-256 for the submission scenario
# (submission_scram_sha_256_with_python_scramp).
if ! python3 -c 'import scramp' 2>/dev/null; then
  echo "== installing Python test peer: scramp"
  python3 -m pip install -q scramp
fi
# xmlschema validates DMARC aggregate reports against the RFC 7489 Appendix C schema
# (dmarc_reports_reach_authorised_addresses_only).
if ! python3 -c 'import xmlschema' 2>/dev/null; then
  echo "== installing the XML schema validator: xmlschema"
  python3 -m pip install -q xmlschema
fi
# schemathesis checks the admin API against its OpenAPI document
# (admin_api_conforms_to_its_openapi_document).
if ! command -v schemathesis >/dev/null; then
  echo "== installing schemathesis (the admin API's OpenAPI checks)"
  python3 -m pip install -q schemathesis==4.32.5
  hash -r
fi

if [ ! -f testpeers/browser/node_modules/playwright-core/package.json ]; then
  echo "== installing the browser test's npm packages (testpeers/browser)"
  (cd testpeers/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --profile ci --no-fail-fast --features tern/fault-injection -- --include-ignored 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary, and the
# last of those is often a doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\ntotal: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
