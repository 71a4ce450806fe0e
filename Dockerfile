# The service in a container: slim Python, a non-root user, the README's install command, and
# `serve` on all interfaces of the container. TLS ends at the proxy in front (README: Deployment).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY cds_service ./cds_service
COPY cards ./cards
RUN python3 -m venv .venv && .venv/bin/pip install -q . \
    && useradd --system --uid 10001 --home-dir /app cds && mkdir /data && chown cds /data
USER cds
# The embedded SQLite store, on a volume; set CDS_DATABASE_URL for PostgreSQL (replicas).
ENV CDS_DB_PATH=/data/azathioprine-cds.sqlite3
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD [".venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
CMD [".venv/bin/azathioprine-cds", "serve", "--host", "0.0.0.0", "--port", "8080"]
