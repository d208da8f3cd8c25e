# Apache Kafka (KRaft, single node) on a locally built Debian JRE base: nothing pulled.
# Built by `python -m shared.devtools.containers build` from a staged context holding the
# Maven Central jars (libs/), shared/{topics,kafka_acls}.py and kafka_entrypoint.py.
ARG BASE=ferry-base-jre:bookworm
FROM ${BASE}
COPY libs /opt/kafka/libs
COPY shared /opt/kafka/shared
COPY kafka_entrypoint.py /opt/kafka/kafka_entrypoint.py
# Named volumes take the ownership of the image's directory: the broker's user can write.
RUN mkdir -p /var/lib/kafka && chown 65534:65534 /var/lib/kafka
USER 65534:65534
WORKDIR /opt/kafka
ENV PYTHONPATH=/opt/kafka HOME=/var/lib/kafka
EXPOSE 9093 9094
HEALTHCHECK --interval=5s --timeout=30s --start-period=300s --retries=5 \
  CMD ["python3", "/opt/kafka/kafka_entrypoint.py", "health"]
ENTRYPOINT ["python3", "/opt/kafka/kafka_entrypoint.py"]
CMD ["run"]
