# syntax=docker/dockerfile:1
# Flink 2.2.1 with PyFlink and the Kafka connector, for the jobmanager and taskmanager services:
#   docker build -f deploy/flink.Dockerfile -t qaloop-flink:2.2.1 .   (from the repository root)
# The official image has no Python. PyFlink goes into a venv that is first on PATH, because
# Python workers start `python` from PATH (a job must not pick another interpreter).
# The Kafka connector (org.apache.flink:flink-sql-connector-kafka, a fat jar that shades
# kafka-clients 4.2, built for Flink 2.1/2.2), resolved from Maven Central by Maven itself.
FROM maven:3.9-eclipse-temurin-17 AS connector
ARG KAFKA_CONNECTOR_VERSION=5.0.0-2.2
RUN mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
      -Dartifact=org.apache.flink:flink-sql-connector-kafka:${KAFKA_CONNECTOR_VERSION} \
      -DoutputDirectory=/connector

FROM flink:2.2.1-scala_2.12-java17
ARG PYFLINK_VERSION=2.2.1

USER root
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/pyflink; \
    /opt/pyflink/bin/pip install --no-cache-dir --disable-pip-version-check \
        "apache-flink==${PYFLINK_VERSION}"; \
    ln -sf /opt/pyflink/bin/python /usr/local/bin/python
ENV PATH=/opt/pyflink/bin:$PATH

# on the classpath of every job (no env.add_jars needed)
COPY --from=connector --chown=flink:flink /connector/*.jar /opt/flink/lib/

# qaloop itself (its scorers run inside the Python UDFs of the judge job); the kafka extra
# because the job's client creates the topics before submitting (qaloop.flink.job).
COPY --chown=flink:flink pyproject.toml README.md /opt/qaloop/
COPY --chown=flink:flink src /opt/qaloop/src
RUN /opt/pyflink/bin/pip install --no-cache-dir --disable-pip-version-check "/opt/qaloop[kafka]"; \
    ln -s "$(/opt/pyflink/bin/python -c 'import site; print(site.getsitepackages()[0])')" \
      /opt/pyflink/site-packages
# python.execution-mode=thread runs the UDFs inside the TaskManager JVM (pemja): that embedded
# interpreter finds pemja, PyFlink and qaloop only through PYTHONPATH.
ENV PYTHONPATH=/opt/pyflink/site-packages
# Retained checkpoints: a volume shared by the jobmanager and taskmanagers (docs/flink.md).
RUN mkdir -p /flink-checkpoints && chown flink:flink /flink-checkpoints

# No USER: like the official image, the entrypoint starts as root, writes FLINK_PROPERTIES into
# the configuration and drops to the `flink` user before starting the jobmanager / taskmanager.
