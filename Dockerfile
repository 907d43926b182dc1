# One Dockerfile, two images (docker compose builds each target):
#   bot:    discord.py and the Redis client; no torch (the bot never loads a model)
#   worker: + torch (the CUDA build from the package index: compose reserves a GPU), transformers
#           and taming; also runs the one-shot `models` service that fetches catalogue models.
FROM python:3.11-slim AS base

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

WORKDIR /app
RUN useradd --create-home --uid 1000 clipbot && mkdir -p /data && chown clipbot /data
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["python", "-m", "jobs.health"]


FROM base AS bot
COPY pyproject.toml README.md ./
COPY jobs jobs
COPY bot bot
# the core dependencies only; fail the build if torch came in through one of them
RUN pip install . \
 && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"
USER clipbot
CMD ["python", "-m", "bot"]


FROM base AS worker
# the heavy, rarely changing layer first
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY jobs jobs
COPY worker worker
RUN pip install '.[worker]' \
 && pip install --no-deps taming-transformers-rom1504==0.0.6
# the shipped small models; compose mounts the `models` volume here (initialised from these),
# into which the `models` service fetches catalogue models as this user
COPY models models
RUN chown -R clipbot /app/models
USER clipbot
CMD ["python", "-m", "worker"]
