# Stand-in for python:3.11.x-slim-bookworm, built from Debian bookworm when Docker Hub cannot be
# reached (test harness only): Debian's CPython 3.11 with venv and pip, `python` on PATH, and
# the host's CA trust store and pip index settings so `pip install` in a build reaches the
# package index the host reaches.
FROM commodities-test/bookworm-minbase:latest
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3 \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip
# Kept by update-ca-certificates if a later build step installs ca-certificates.
COPY host-ca-certificates.crt /usr/local/share/ca-certificates/host-ca-certificates.crt
COPY host-ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf
CMD ["python3"]
