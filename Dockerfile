# The ledger service against an external PostgreSQL 14+ (LEDGER_DATABASE_URL is required:
# the embedded database is for development and tests).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY migrations ./migrations
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ledger
COPY --from=build /install /usr/local
USER ledger
ENV LEDGER_ENVIRONMENT=production \
    LEDGER_HOST=0.0.0.0 \
    LEDGER_PORT=8000 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["ledger", "serve"]
