# The broker's base: the locally built Debian minbase (ferry-base-python) plus Debian's JRE.
# (The base has /usr/share/man trimmed; the JRE's alternatives want man1 to exist.)
ARG BASE=ferry-base-python:bookworm
FROM ${BASE}
RUN mkdir -p /usr/share/man/man1 \
 && DEBIAN_FRONTEND=noninteractive apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/*
