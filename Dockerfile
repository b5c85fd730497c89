# One image for both roles: `marionet serve` (api) and `marionet worker`.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libGL and glib are what opencv and mediapipe load at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY marionet ./marionet
RUN pip install .

RUN useradd --create-home --uid 1000 marionet && mkdir -p /data /shared && chown marionet /data /shared
USER marionet
ENV MARIONET_DATA_DIR=/data MARIONET_STORAGE_DIR=/shared

EXPOSE 8000
CMD ["marionet", "serve", "--host", "0.0.0.0", "--port", "8000"]
