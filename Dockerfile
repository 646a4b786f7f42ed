# GPU image: CUDA-enabled JAX, MuJoCo rendering through EGL on the NVIDIA driver, rssm-jax.
#   docker build -t rssm-jax .
#   docker run --gpus all --rm -v "$PWD/runs:/app/runs" rssm-jax \
#     python -m experiments.train --preset dmc-vision --task walker-walk --logdir runs/walker
FROM python:3.11-slim-bookworm

# EGL through glvnd; the NVIDIA container toolkit mounts the driver's EGL vendor library when
# the 'graphics' capability is requested (below). TCMalloc: the runner preloads it for the host.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libopengl0 libglvnd0 libtcmalloc-minimal4 \
    && rm -rf /var/lib/apt/lists/*

ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics \
    MUJOCO_GL=egl \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rssm ./rssm
COPY agents ./agents
COPY experiments ./experiments
COPY benchmarks ./benchmarks
RUN pip install ".[gpu,experiments]"

CMD ["python", "-m", "experiments.train", "--help"]
