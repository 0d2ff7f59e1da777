#!/usr/bin/env bash
# Regenerates fuzz/fixtures/ (the fuzz-only CA the targets load) and the seed corpora in
# fuzz/corpus/<target>/ with openssl. The committed files are the reference: rerunning this makes
# new keys, so every certificate, CSR and OCSP request changes together. The CA key in fixtures/ is
# a throwaway test key, used by nothing but the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")"
fx=fixtures
c=corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Findings' regression seeds (corpus/<target>/regression-*) are kept: they are not generated here.
mkdir -p "$tmp/keep"
for f in "$c"/*/regression-*; do
  [ -e "$f" ] || continue
  mkdir -p "$tmp/keep/$(basename "$(dirname "$f")")"
  cp -p "$f" "$tmp/keep/$(basename "$(dirname "$f")")/"
done
rm -rf "$fx" "$c"
mkdir -p "$fx" "$c"/{csr_import,cert_validate,ocsp_request,json_bodies,http_head}
cp -rp "$tmp/keep/." "$c/"

# The fuzz CA (P-256, self-signed, 100 years) and an intermediate under it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$fx/ca.key" \
  -subj "/O=ScaiVault fuzz/CN=ScaiVault Fuzz Root" -days 36500 -sha256 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -addext subjectKeyIdentifier=hash -out "$fx/ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/int.key" \
  -subj "/O=ScaiVault fuzz/CN=ScaiVault Fuzz Intermediate" -out "$tmp/int.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >"$tmp/int.ext"
openssl x509 -req -in "$tmp/int.csr" -CA "$fx/ca.pem" -CAkey "$fx/ca.key" -set_serial 0x1001 \
  -days 18250 -sha256 -extfile "$tmp/int.ext" -out "$fx/int.pem" 2>/dev/null

# Leaves and their CSRs: several key types and name shapes.
leaf() { # name keyargs subj san eku issuer issuerkey serial
  local n=$1 keyargs=$2 subj=$3 san=$4 eku=$5 iss=$6 isskey=$7 serial=$8
  # shellcheck disable=SC2086
  openssl req -new $keyargs -nodes -keyout "$tmp/$n.key" -subj "$subj" \
    ${san:+-addext "subjectAltName=$san"} -out "$tmp/$n.csr" 2>/dev/null
  openssl req -in "$tmp/$n.csr" -outform DER -out "$c/csr_import/$n.der"
  cp "$tmp/$n.csr" "$c/csr_import/$n.pem"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    [ -n "$eku" ] && echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
    echo "authorityKeyIdentifier=keyid"
  } >"$tmp/$n.ext"
  openssl x509 -req -in "$tmp/$n.csr" -CA "$iss" -CAkey "$isskey" -set_serial "$serial" \
    -days 3650 -sha256 -extfile "$tmp/$n.ext" -out "$tmp/$n.pem" 2>/dev/null
  openssl x509 -in "$tmp/$n.pem" -outform DER -out "$c/cert_validate/$n.der"
}
ec256='-newkey ec -pkeyopt ec_paramgen_curve:P-256'
ec384='-newkey ec -pkeyopt ec_paramgen_curve:P-384'
leaf ec256-dns "$ec256" "/CN=billing.svc.cluster.local" \
  "DNS:billing.svc.cluster.local,DNS:billing-api.svc.cluster.local,IP:10.0.5.100" serverAuth \
  "$fx/ca.pem" "$fx/ca.key" 0x2001
leaf ec384-client "$ec384" "/O=Example/CN=reporting.svc.cluster.local" \
  "DNS:reporting.svc.cluster.local,URI:spiffe://cluster.local/ns/prod/sa/reporting" clientAuth \
  "$fx/int.pem" "$tmp/int.key" 0x2002
leaf rsa2048 "-newkey rsa:2048" "/CN=rsa.example.com" "DNS:rsa.example.com,DNS:*.rsa.example.com" \
  serverAuth,clientAuth "$fx/ca.pem" "$fx/ca.key" 0x2003
leaf ed25519 "-newkey ed25519" "/CN=ed.example.com" "DNS:ed.example.com,IP:2001:db8::1" "" \
  "$fx/int.pem" "$tmp/int.key" 0x2004
leaf email "$ec256" "/CN=mail user" "email:user@example.com,DNS:mail.example.com" "" \
  "$fx/ca.pem" "$fx/ca.key" 0x2005
leaf nosan "$ec256" "/C=DE/ST=Berlin/L=Berlin/O=Example/OU=Ops/CN=nosan.example.com" "" "" \
  "$fx/ca.pem" "$fx/ca.key" 0x2006
leaf rsa1024 "-newkey rsa:1024" "/CN=weak.example.com" "DNS:weak.example.com" serverAuth \
  "$fx/ca.pem" "$fx/ca.key" 0x2007
openssl x509 -in "$fx/ca.pem" -outform DER -out "$c/cert_validate/ca.der"
openssl x509 -in "$fx/int.pem" -outform DER -out "$c/cert_validate/int.der"
# PEM inputs as the validate endpoint gets them: a leaf with its chain, and a leaf with a CRL.
cat "$tmp/ec384-client.pem" "$fx/int.pem" >"$c/cert_validate/chain.pem"
cp "$tmp/ec256-dns.pem" "$c/cert_validate/leaf.pem"
cat >"$tmp/ca.cnf" <<CNF
[ca]
default_ca = fuzz
[fuzz]
database = $tmp/index.txt
crlnumber = $tmp/crlnumber
default_md = sha256
default_crl_days = 3650
crl_extensions = crl_ext
[crl_ext]
authorityKeyIdentifier = keyid
CNF
printf 'R\t361231000000Z\t261128000000Z\t2003\tunknown\t/CN=rsa.example.com\n' >"$tmp/index.txt"
echo 01 >"$tmp/crlnumber"
openssl ca -gencrl -config "$tmp/ca.cnf" -cert "$fx/ca.pem" -keyfile "$fx/ca.key" \
  -out "$tmp/ca.crl" 2>/dev/null
cat "$tmp/rsa2048.pem" "$tmp/ca.crl" >"$c/cert_validate/leaf-crl.pem"

# OCSP requests for the fuzz CA's leaves: SHA-1 and SHA-256 CertIDs, with and without a nonce,
# several CertIDs, and one for another issuer (the intermediate's leaf).
o=$c/ocsp_request
openssl ocsp -issuer "$fx/ca.pem" -cert "$tmp/ec256-dns.pem" -no_nonce -reqout "$o/sha1.der" 2>/dev/null
openssl ocsp -issuer "$fx/ca.pem" -cert "$tmp/rsa2048.pem" -reqout "$o/sha1-nonce.der" 2>/dev/null
openssl ocsp -issuer "$fx/ca.pem" -sha256 -cert "$tmp/email.pem" -no_nonce -reqout "$o/sha256.der" 2>/dev/null
openssl ocsp -issuer "$fx/ca.pem" -cert "$tmp/ec256-dns.pem" -cert "$tmp/nosan.pem" \
  -serial 0x7fffffffffffffff -reqout "$o/multi.der" 2>/dev/null
openssl ocsp -issuer "$fx/ca.pem" -serial 0x01 -no_nonce -reqout "$o/unknown-serial.der" 2>/dev/null
openssl ocsp -issuer "$fx/int.pem" -cert "$tmp/ed25519.pem" -no_nonce -reqout "$o/other-issuer.der" 2>/dev/null
openssl ocsp -issuer "$fx/ca.pem" -cert "$tmp/rsa2048.pem" -signer "$fx/ca.pem" -signkey "$fx/ca.key" \
  -reqout "$o/signed.der" 2>/dev/null

# JSON bodies (taken from the system tests), one per file, named by the body they stand for.
j=$c/json_bodies
csr_json() { python3 -c 'import json,sys; print(json.dumps({sys.argv[1]: open(sys.argv[2]).read(), **json.loads(sys.argv[3])}))' "$@"; }
echo '{"common_name": "billing.svc.cluster.local", "alt_names": ["billing-api.svc.cluster.local"], "ip_sans": ["10.0.5.100"], "ttl": "168h"}' >"$j/issue.json"
echo '{"common_name": "x.svc.cluster.local", "uri_sans": ["spiffe://cluster.local/ns/prod/sa/billing"], "ip_sans": ["10.1.2.3"], "private_key_format": "pkcs8"}' >"$j/issue-uri.json"
echo '{"common_name": "*.svc.cluster.local", "alt_names": ["b\u00fccher.svc.cluster.local", "c.b.internal."], "ip_sans": ["not-an-ip", "::ffff:10.0.0.1"], "ttl": "721h"}' >"$j/issue-bad.json"
csr_json csr_pem "$c/csr_import/ec256-dns.pem" '{"ttl": "24h"}' >"$j/sign.json"
csr_json csr_pem "$c/csr_import/rsa2048.pem" '{"note": "for review"}' >"$j/csr-import.json"
echo '{"name": "root", "common_name": "Example Root", "ca_type": "root", "key_type": "ec", "key_size": 384, "validity_days": 3650, "organization": "Example", "country": "DE", "max_path_length": 1, "permitted_dns_domains": ["example.com", ".internal."], "excluded_dns_domains": ["bad.example.com"], "permitted_ip_ranges": ["10.0.0.0/8", "fd00::/8"], "crl_interval": "1h", "ocsp_validity": "12h"}' >"$j/ca-root.json"
echo '{"name": "int", "common_name": "Example Intermediate", "ca_type": "intermediate", "parent_ca_id": "ca_0123456789abcdef", "validity_days": 1825, "key_type": "rsa", "key_size": 3072, "locality": "Berlin", "province": "Berlin", "organizational_unit": "PKI", "ocsp_signer": "delegated", "ocsp_signer_lifetime": "72h"}' >"$j/ca-int.json"
echo '{"serial_number": "7a:00:3f:11:22:33:44:55:66:77:88:99", "reason": "key_compromise"}' >"$j/revoke.json"
echo '{"serial_number": "0x01", "reason": "certificate_hold"}' >"$j/revoke-hold.json"
python3 -c 'import json,sys; print(json.dumps({"certificate_pem": open(sys.argv[1]).read(), "chain_pem": open(sys.argv[2]).read(), "purpose": "client_auth", "dns_name": "reporting.svc.cluster.local", "at_time": "2027-06-01T00:00:00Z"}))' \
  "$tmp/ec384-client.pem" "$fx/int.pem" >"$j/validate.json"
python3 -c 'import json,sys; print(json.dumps({"certificate_pem": open(sys.argv[1]).read(), "purpose": "server_auth", "ip": "10.0.5.100", "check_revocation": True, "crls_pem": open(sys.argv[2]).read()}))' \
  "$tmp/ec256-dns.pem" "$tmp/ca.crl" >"$j/validate-crl.json"
python3 -c 'import json,sys; print(json.dumps({"name": "partner root", "certificate_pem": open(sys.argv[1]).read()}))' \
  "$fx/ca.pem" >"$j/trust-anchor.json"
echo '{"name": "ci", "policies": ["issuer:svc", "auditor"], "ttl": "720h"}' >"$j/token.json"
echo '{"retention": "72h", "dry_run": true}' >"$j/tidy.json"
echo '{"name": "svc", "ca_id": "ca_0123456789abcdef", "allowed_domains": ["*.svc.cluster.local", "*.internal"], "allow_subdomains": true, "allow_ip_sans": true, "allowed_ip_ranges": ["10.0.0.0/8"], "allowed_uri_sans": ["spiffe://cluster.local/ns/*/sa/*"], "max_ttl": "720h", "key_type": "ec", "key_bits": 256, "require_cn": true}' >"$j/role.json"
# Request heads for the relying-party listener: OCSP POST, CRL GET over HTTP/1.0 keep-alive,
# absolute form with a conditional and 100-continue, conflicting lengths, a pipelined GET.
h=$c/http_head
printf 'POST /v1/pki/ocsp/ca_1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: 83\r\n\r\n' >"$h/post_ocsp"
printf 'GET /v1/pki/ca/ca_1/crl?format=pem HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n' >"$h/get_crl_http10"
printf 'GET http://pki.example/v1/pki/ca/ca_1/certificate HTTP/1.1\r\nIf-None-Match: "a"\r\nExpect: 100-continue\r\nConnection: TE, close\r\n\r\n' >"$h/absolute_form"
printf 'POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n' >"$h/conflicting_lengths"
printf 'GET /v1/pki/ocsp/ca_1/MEMwQTA%%2FMD0wOzAJBgUrDgMCGgUABBQ HTTP/1.1\r\nHost: pki\r\n\r\nGET / HTTP/1.1\r\n\r\n' >"$h/pipelined"
echo "seeds: $(find "$c" -type f | wc -l) files, $(du -sk "$c" | cut -f1) KiB"
