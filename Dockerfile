# Image of the gymchurn job: `docker compose run --rm gymchurn run --month 2026-11`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=false \
    GYMCHURN_HOME=/var/lib/gymchurn \
    GYMCHURN_MODEL_DIR=/var/lib/gymchurn/models \
    GYMCHURN_OUTPUT_DIR=/var/lib/gymchurn/output

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gymchurn gymchurn
COPY flows flows
COPY sql sql
RUN pip install --no-cache-dir . \
    && useradd --system --create-home gymchurn \
    && mkdir -p /var/lib/gymchurn/models /var/lib/gymchurn/output \
    && chown -R gymchurn /var/lib/gymchurn

USER gymchurn

ENTRYPOINT ["gymchurn"]
CMD ["--help"]
