# Registry Browser: the web dashboard (gunicorn) and, with another command, its task worker.
#   docker build -t registry-browser .
#   docker run ... registry-browser                               # web, port 8000
#   docker run ... registry-browser python manage.py db_worker    # background worker
# compose.yaml runs both, with PostgreSQL and a registry.
FROM python:3.12-slim

# DEBUG off unless a run says otherwise: the image then refuses to start without a real
# SECRET_KEY, serves hashed static files, and never shows debug pages.
ENV DEBUG=false \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY manage.py ./
COPY registry_browser ./registry_browser
COPY dashboard ./dashboard
COPY templates ./templates
COPY static ./static
COPY deploy/gunicorn.conf.py ./deploy/gunicorn.conf.py
RUN pip install --no-deps -e . \
    && SECRET_KEY=collectstatic-only-not-used-at-run-time python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --no-create-home registry-browser

USER registry-browser
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
