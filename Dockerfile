# callvault (serve, worker, asterisk render) for docker-compose.yml. Production needs no
# espeak-ng/sox (the demo's speech) nor debootstrap/SIPp (the sandbox and its tests);
# libsndfile1 backs soundfile when its wheel's bundled copy cannot be used.
FROM python:3.11-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libsndfile1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/callvault --shell /usr/sbin/nologin callvault \
 && install -d -o callvault -g callvault -m 0700 /var/lib/callvault /var/lib/callvault-keys

WORKDIR /opt/callvault
COPY pyproject.toml README.md ./
COPY callvault callvault
COPY telephony telephony
COPY ivr ivr
COPY recordings recordings
COPY redaction redaction
COPY storage storage
# `callvault asterisk render` reads the templates next to the source tree, hence the
# in-place (editable) install
COPY deploy/asterisk deploy/asterisk
RUN pip install --no-cache-dir -e . && python -m compileall -q callvault telephony ivr \
    recordings redaction storage

# the render target of the asterisk-config service: a fresh named volume copies its owner
RUN install -d -o callvault -g callvault -m 0700 /run/callvault-asterisk
USER callvault
ENV CALLVAULT_STATE_DIR=/var/lib/callvault PYTHONUNBUFFERED=1
EXPOSE 8080
ENTRYPOINT ["callvault"]
CMD ["serve"]
