# Image of the signing service: Debian's SoftHSM2, poppler and fonts, and the project installed with pip.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 opensc poppler-utils qpdf fonts-liberation2 fonts-texgyre libnss3-tools \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/signserver
COPY pyproject.toml README.md ./
COPY signserver ./signserver
COPY hsm ./hsm
COPY policies ./policies
COPY softhsm-config ./softhsm-config
RUN pip install --no-cache-dir .

ENV SIGNSERVER_HOME=/var/lib/signserver \
    SIGNSERVER_HOST=0.0.0.0 \
    SIGNSERVER_PORT=8080 \
    SIGNSERVER_POLICIES_DIR=/opt/signserver/policies \
    SIGNSERVER_LOG_FORMAT=json
EXPOSE 8080
CMD ["sh", "-c", "signserver init && exec signserver serve"]
