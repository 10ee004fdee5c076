# Stand-in for postgres:15.x-bookworm, built from Debian bookworm when Docker Hub cannot be
# reached (test harness only): Debian's PostgreSQL 15 with an entry point that honours the
# official image's POSTGRES_DB, POSTGRES_USER and POSTGRES_PASSWORD(_FILE) on first start.
FROM commodities-test/bookworm-minbase:latest
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/standin.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/run/postgresql /var/lib/postgresql/data \
    && chown -R postgres:postgres /var/run/postgresql /var/lib/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
