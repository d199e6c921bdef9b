#!/bin/sh
# Makes what Squid's SSL-bump needs in DIR (default: ./bump):
#   bump-ca.pem      the CA Squid signs its per-site certificates with
#                    (certificate and key; readable by Squid only)
#   bump-ca.crt      the same certificate alone: install it as trusted on
#                    the clients (browsers, curl --cacert, the OS store)
#   ssl_db/          the certificate cache of sslcrtd_program
#
#   squid/make-bump-ca.sh [DIR] [DAYS]
set -eu
dir=${1:-bump}
days=${2:-825}
certgen=${CERTGEN:-/usr/lib/squid/security_file_certgen}
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -subj "/CN=virus-scanner SSL-bump CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$dir/bump-ca.key" -out "$dir/bump-ca.crt" 2>/dev/null
cat "$dir/bump-ca.crt" "$dir/bump-ca.key" > "$dir/bump-ca.pem"
rm -f "$dir/bump-ca.key"
chmod 600 "$dir/bump-ca.pem"
rm -rf "$dir/ssl_db"
"$certgen" -c -s "$dir/ssl_db" -M 16MB >/dev/null
echo "bump CA: $dir/bump-ca.crt (give it to the clients); Squid uses $dir/bump-ca.pem and $dir/ssl_db"
