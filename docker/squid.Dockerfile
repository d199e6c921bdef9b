# Squid with SSL-bump (Debian's squid-openssl) and squid/bump.conf, for
# docker-compose.yml. On first start it makes the bump CA in /bump (a volume):
# give /bump/bump-ca.crt to the clients.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends squid-openssl openssl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY squid/bump.conf /etc/squid/bump.conf.in
COPY squid/make-bump-ca.sh /usr/local/bin/make-bump-ca.sh
COPY docker/squid-entrypoint.sh /usr/local/bin/squid-entrypoint.sh
EXPOSE 3128
ENTRYPOINT ["/usr/local/bin/squid-entrypoint.sh"]
