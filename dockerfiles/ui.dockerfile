# UI image: the Gradio page only (the ui dependency group: no torch, no model code).
# INFERENCE_URL (TorchServe's inference API) comes from the environment.
#   docker build -f dockerfiles/ui.dockerfile -t brain-mri-ui .
#   docker run -p 7860:7860 -e PORT=7860 -e INFERENCE_URL=http://host:8080 brain-mri-ui
FROM python:3.11-slim-bookworm

# UV_OFFLINE=1 builds from a mounted uv cache (dockerfiles/local/build.sh); unset: PyPI.
ARG UV_OFFLINE

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False

RUN useradd --create-home --uid 10001 ui
WORKDIR /app

# Layer 1: dependencies only. Same command as CI's image-steps job.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-install-project --no-default-groups --group ui

# Layer 2: the project (only the package; the page imports lightning_app.ui alone).
COPY lightning_app ./lightning_app
RUN uv sync --frozen --no-default-groups --group ui

# The commit the image was built from (lightning_app.training.runinfo.git_commit reads it); last,
# so that a new commit does not invalidate the dependency layers.
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=${GIT_COMMIT}

USER 10001

# Cloud Run sets PORT; the page then listens on 0.0.0.0:$PORT. No management API there.
ENV PORT=8080 \
    INFERENCE_URL=http://127.0.0.1:8080 \
    MANAGEMENT_URL=""
EXPOSE 8080
CMD ["python", "-m", "lightning_app.ui"]
