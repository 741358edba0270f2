# Lean serving image: LitServe on the torch-free inference core. numpy, Pillow and ONNX
# Runtime, no torch, no JVM (goal <= 600 MB; TorchServe's image carries torch and its CUDA
# libraries). It serves ONNX exports only (precision int8, the default, or onnx-fp32): an
# archive without an ONNX graph needs the eager backend and fails to start with one line that
# says so. Same REST contract as the TorchServe image (docs/serving.md). The .mar comes from
# the build context, as for dockerfiles/serve.dockerfile.
#   make mar && docker build -f dockerfiles/serve-lite.dockerfile -t brain-mri-serve-lite .
#   docker run -p 8080:8080 brain-mri-serve-lite
FROM python:3.11-slim-bookworm

# UV_OFFLINE=1 builds from a mounted uv cache (dockerfiles/local/build.sh); unset: PyPI.
ARG UV_OFFLINE

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1

RUN useradd --create-home --uid 10001 serve && install -d -o 10001 /tmp/serve
WORKDIR /app

# Layer 1: dependencies only. Torch lives in the train and serve groups, never in the
# project's own dependencies, so the serve-lite group installs without it.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-install-project --no-default-groups --group serve-lite

# Layer 2: the project (the torch-free core and the LitServe adapter).
COPY lightning_app ./lightning_app
COPY serve ./serve
RUN uv sync --frozen --no-default-groups --group serve-lite
# The build fails if torch found its way in.
# hadolint ignore=DL3059
RUN python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# The model archive, from the build context (path relative to it).
ARG MAR=model_store/brain_mri.mar
COPY ${MAR} /app/model_store/brain_mri.mar

# The commit the image was built from; last, so a new commit keeps the dependency layers.
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=${GIT_COMMIT}

USER 10001

# python -m serve with SERVE_RUNTIME=litserve runs serve.litserve_app and stops it on SIGTERM.
ENV PORT=8080 \
    SERVE_RUNTIME=litserve \
    SERVE_HOST=0.0.0.0 \
    SERVE_MAR=/app/model_store/brain_mri.mar \
    SERVE_WORKDIR=/tmp/serve
EXPOSE 8080
CMD ["python", "-m", "serve"]
