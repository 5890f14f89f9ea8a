# syntax=docker/dockerfile:1
# Conversation Service image: the API by default; the same image runs `migrate` and `worker`.
#   docker build -t conversation-service .
#   docker run --rm -p 8000:8000 -e CONVERSATION_... conversation-service
# Configuration is environment only (CONVERSATION_*); production refuses to start without a real
# JWT secret, internal API keys, a webhook secret and a Redis URL, so the image ships no secret.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# README* and not README.md: pyproject names it, and a missing readme should not break COPY.
COPY pyproject.toml constraints.txt README* ./
COPY src ./src
# The Python client: the reference orchestrator (`conversation-service dev`) talks through it.
COPY clients/python ./clients/python
RUN /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install -c constraints.txt . ./clients/python

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVERSATION_ENVIRONMENT=production
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir /app && chown app:app /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER app
EXPOSE 8000
# Liveness only (the process answers); readiness (/health/ready: database and Redis) belongs to
# the orchestrator's probes, so a database blip does not get healthy containers restarted.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=3)"]
CMD ["conversation-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
