# chat-bridge as a container: `docker build -t chat-bridge .`, then see docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The pinned dependencies first, in their own layer: a change to the code does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt

COPY README.md ./
COPY bridge/ bridge/
COPY adapters/ adapters/
COPY storage/ storage/
COPY sandbox/ sandbox/
RUN pip install --no-deps -c constraints.txt . \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home chat-bridge \
    && mkdir -p /data /config \
    && chown chat-bridge:chat-bridge /data

# The default SQLite URL is relative to the working directory: the database lands in /data.
WORKDIR /data
VOLUME ["/data"]
USER chat-bridge

# The image serves /metrics and /healthz on every interface of the container; publish the port
# only where Prometheus can reach it. The environment beats the config file (docs/deploy.md).
ENV CHAT_BRIDGE_OPS__ENABLED=true \
    CHAT_BRIDGE_OPS__HOST=0.0.0.0
EXPOSE 9102

# Reads the same config and environment as the bridge, so it follows ops.port wherever it is set.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "adapters.ops.probe", "--config", "/config/config.toml"]

# SIGTERM drains replies (recovery.drain_timeout, 20 s, then final edits): run with --stop-timeout 60.
STOPSIGNAL SIGTERM
ENTRYPOINT ["chat-bridge"]
CMD ["run", "--config", "/config/config.toml"]
