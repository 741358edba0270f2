# Serving image: TorchServe + a Java 17 runtime + the serve dependency group, running
# brain_mri.mar as a non-root user. The .mar is never in git: it comes from the build
# context (make mar -> model_store/brain_mri.mar; cloudbuild.yaml copies it from GCS
# first when _MAR_URI is set). Cloud Run sets PORT; inference listens on 0.0.0.0:$PORT,
# management and metrics stay on 127.0.0.1 (serve/config.properties).
#   make mar && docker build -f dockerfiles/serve.dockerfile -t brain-mri-serve .
#   docker run -p 8080:8080 brain-mri-serve
FROM python:3.11-slim-bookworm

# UV_OFFLINE=1 builds from a mounted uv cache (dockerfiles/local/build.sh); unset: PyPI.
ARG UV_OFFLINE

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1

RUN useradd --create-home --uid 10001 serve && install -d -o 10001 /tmp/serve
WORKDIR /app

# PyPI has only the CUDA build of torch for Linux: libtorch links cuDNN, cuBLAS, cuFFT,
# CUPTI, nvJitLink... at load time, so those stay; the packages nothing loads go (triton
# alone is ~1 GB). Measured by make image-test; see docs/deploy.md ("A smaller serving image").
ARG NO_GPU="--no-install-package triton --no-install-package nvidia-cuda-cccl \
--no-install-package nvidia-nvtx --no-install-package cuda-bindings \
--no-install-package cuda-pathfinder --no-install-package cuda-toolkit"

# Layer 1: dependencies only.
COPY pyproject.toml uv.lock README.md ./
# hadolint ignore=SC2086
RUN uv sync --frozen --no-install-project --no-default-groups --group serve $NO_GPU

# Layer 2: the project (the handler imports lightning_app.transforms and .models.backbones).
COPY lightning_app ./lightning_app
COPY serve ./serve
# hadolint ignore=SC2086
RUN uv sync --frozen --no-default-groups --group serve $NO_GPU

# The model archive, from the build context (path relative to it).
ARG MAR=model_store/brain_mri.mar
COPY ${MAR} /app/model_store/brain_mri.mar

# The commit the image was built from (lightning_app.training.runinfo.git_commit reads it); last,
# so that a new commit does not invalidate the dependency layers.
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=${GIT_COMMIT}

USER 10001

# python -m serve runs `torchserve --start --foreground` and stops it on SIGTERM.
ENV PORT=8080 \
    SERVE_HOST=0.0.0.0 \
    SERVE_MAR=/app/model_store/brain_mri.mar \
    SERVE_WORKDIR=/tmp/serve
EXPOSE 8080
CMD ["python", "-m", "serve"]
