# One image for the bot and the workers (compose picks the command).
# torch from the package index is the CUDA build: the worker uses the GPU that compose reserves.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

WORKDIR /app

# the heavy, rarely changing layer first
RUN pip install torch==2.13.0

COPY pyproject.toml README.md ./
COPY jobs jobs
COPY worker worker
COPY bot bot
RUN pip install . \
 && pip install --no-deps taming-transformers-rom1504==0.0.6

# the shipped small models (compose can mount other models over /app/models)
COPY models models

RUN useradd --create-home --uid 1000 clipbot && mkdir -p /data && chown clipbot /data
USER clipbot

HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["python", "-m", "jobs.health"]
CMD ["python", "-m", "worker"]
