# Training image: the package + the train dependency group; the entrypoint is the
# LightningCLI (python -m lightning_app.train_entry = python -m lightning_app plus Vertex
# AI's AIP_* directories and CLUSTER_SPEC). No data, weights or secrets inside. W&B logs
# online when WANDB_API_KEY (or WANDB_API_KEY_SECRET) is set and WANDB_MODE is not.
#   docker build -f dockerfiles/train.dockerfile -t brain-mri-train .
#   docker run brain-mri-train fit --config configs/smoke.yaml --data.data_dir /data
FROM python:3.11-slim-bookworm

# UV_OFFLINE=1 builds from a mounted uv cache (dockerfiles/local/build.sh); unset: PyPI.
ARG UV_OFFLINE

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1

# The run writes runs/ and .cache/ under /app: the training user owns the directory.
RUN useradd --create-home --uid 10001 trainer && install -d -o 10001 /app
WORKDIR /app

# Layer 1: dependencies only (rebuilt when uv.lock changes). Same command as CI's image-steps job.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-install-project --no-default-groups --group train

# Layer 2: the project itself.
COPY lightning_app ./lightning_app
COPY configs ./configs
# the handler and model config that lightning_app.export packs into the .mar
COPY serve ./serve
RUN uv sync --frozen --no-default-groups --group train

# The commit the image was built from (lightning_app.training.runinfo.git_commit reads it); last,
# so that a new commit does not invalidate the dependency layers.
ARG GIT_COMMIT=unknown
ENV GIT_COMMIT=${GIT_COMMIT}

USER 10001

ENTRYPOINT ["python", "-m", "lightning_app.train_entry"]
CMD ["--help"]
