# MIDOG 2022 (track 1) mitotic figure detector: grand-challenge.org algorithm container.
#
# Base image: any image that already has Python >= 3.11, pip and torch. The default is the official PyTorch CUDA
# runtime, so the GPU is used on grand-challenge; torch is deliberately not in requirements.txt and is never
# reinstalled here (the build fails if installing the requirements would change it).
#
# Build arguments:
#   BASE_IMAGE     base image (default below).
#   EXTRA_CA_CERT  path, relative to the build context, of a PEM file with extra CA certificate(s) (e.g. the one
#                  of a TLS-intercepting corporate proxy). Added to pip's own CA bundle for the `pip install` of
#                  this build only; not installed in the image's trust store nor used at run time. Default: none.
#                  build.sh sets it from the host path in its EXTRA_CA_CERT environment variable.
#
# Works with the classic builder (DOCKER_BUILDKIT=0) and with BuildKit.
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG EXTRA_CA_CERT=""

LABEL nl.diagnijmegen.rse.algorithm.name=midog-p4-detector \
      nl.diagnijmegen.rse.algorithm.hardware.cpu.count=2 \
      nl.diagnijmegen.rse.algorithm.hardware.cpu.capabilities=() \
      nl.diagnijmegen.rse.algorithm.hardware.memory=8G \
      nl.diagnijmegen.rse.algorithm.hardware.gpu.count=1 \
      nl.diagnijmegen.rse.algorithm.hardware.gpu.cuda_compute_capability=() \
      nl.diagnijmegen.rse.algorithm.hardware.gpu.memory=4G

# The container runs with a read-only root file system, no network and as a non-root user: every cache a library
# might write goes to /tmp (a tmpfs on grand-challenge and in test.sh), nothing to the home directory.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    TORCH_HOME=/tmp/.cache/torch \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    CUDA_CACHE_PATH=/tmp/.cache/nv \
    NUMBA_CACHE_DIR=/tmp/.cache/numba \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements.txt ${EXTRA_CA_CERT} /tmp/build/

RUN set -eu; \
    groupadd -r algorithm; \
    useradd -m --no-log-init -r -g algorithm algorithm; \
    mkdir -p /opt/algorithm /input /output; \
    chown algorithm:algorithm /input /output; \
    torch_pin=$(python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))") \
        || { echo "BASE_IMAGE must provide python with torch installed" >&2; exit 1; }; \
    echo "$torch_pin" > /tmp/build/constraints.txt; \
    if [ -n "$EXTRA_CA_CERT" ]; then \
        cat "$(python -c 'import pip._vendor.certifi as c; print(c.where())')" \
            "/tmp/build/$(basename "$EXTRA_CA_CERT")" > /tmp/build/pip-ca.pem; \
        export PIP_CERT=/tmp/build/pip-ca.pem; \
    fi; \
    python -m pip install --no-cache-dir --progress-bar off -c /tmp/build/constraints.txt -r /tmp/build/requirements.txt; \
    python -c "import torch, importlib.metadata as m; assert 'torch==' + m.version('torch') == '$torch_pin', 'torch changed'"; \
    rm -rf /tmp/build /root/.cache

USER algorithm
WORKDIR /opt/algorithm

COPY process.py /opt/algorithm/
COPY model/ /opt/algorithm/model/

ENTRYPOINT python -m process $0 $@
