#!/bin/sh
# Fills in squid/bump.conf for the container (Squid on 3128, ICAP at
# $ICAP_HOST:$ICAP_PORT, the system's CAs for origins), makes the bump CA
# once, and runs Squid in the foreground.
set -eu
ICAP_HOST=${ICAP_HOST:-producer}
ICAP_PORT=${ICAP_PORT:-1344}
[ -f /bump/bump-ca.pem ] || make-bump-ca.sh /bump
chown -R proxy:proxy /bump
mkdir -p /var/spool/squid-run && chown proxy:proxy /var/spool/squid-run
sed -e "s|127.0.0.1:@HTTP_PORT@|0.0.0.0:3128|" \
    -e "s|@BUMP_DIR@|/bump|g" \
    -e "s|@DIR@|/var/spool/squid-run|g" \
    -e "s|icap://127.0.0.1:@ICAP_PORT@|icap://$ICAP_HOST:$ICAP_PORT|g" \
    -e "s|^tls_outgoing_options cafile=@ORIGIN_CA@|tls_outgoing_options cafile=/etc/ssl/certs/ca-certificates.crt|" \
    -e "s|^http_access allow all|acl clients src 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16\nhttp_access allow clients\nhttp_access deny all|" \
    /etc/squid/bump.conf.in > /etc/squid/squid.conf
exec squid -N -f /etc/squid/squid.conf
