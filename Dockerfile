# MIDOG 2022 (track 1) mitotic figure detector: grand-challenge.org algorithm container.
#
# Base image: any image that already has Python >= 3.11, pip and torch. The default is the official PyTorch CUDA
# runtime, so the GPU is used on grand-challenge; torch is deliberately not in requirements.txt and is never
# reinstalled here: pip runs with a constraint pinning the base image's torch, so a requirement that does not fit
# that torch fails the build instead of silently pulling a multi-GB torch from PyPI.
#
# Build argument:
#   BASE_IMAGE     base image (default below).
# Extra CA certificate(s) for pip, e.g. behind a TLS-intercepting corporate proxy: a PEM file named
# .build-extra-ca.pem in the build context (build.sh puts it there from its EXTRA_CA_CERT environment variable and
# removes it afterwards). When present it is appended to pip's own CA bundle for the `pip install` of this build
# only; it is not added to the image's trust store nor used at run time. When absent nothing changes.
#
# Uses only syntax that both the classic builder (DOCKER_BUILDKIT=0, what CI runs) and BuildKit accept.
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

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

# The bracket makes the certificate optional: a wildcard that matches nothing copies nothing (an empty build
# argument here would make the classic builder copy the whole context instead).
COPY requirements.txt .build-extra-ca.pe[m] /tmp/build/

RUN set -eu; \
    groupadd -r algorithm; \
    useradd -m --no-log-init -r -g algorithm algorithm; \
    mkdir -p /opt/algorithm /input /output; \
    chown algorithm:algorithm /input /output; \
    torch_pin=$(python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))") \
        || { echo "BASE_IMAGE must provide python with torch installed" >&2; exit 1; }; \
    echo "$torch_pin" > /tmp/build/constraints.txt; \
    if [ -f /tmp/build/.build-extra-ca.pem ]; then \
        echo "pip trusts the extra CA certificate(s) of .build-extra-ca.pem for this build"; \
        cat "$(python -c 'import pip._vendor.certifi as c; print(c.where())')" /tmp/build/.build-extra-ca.pem \
            > /tmp/build/pip-ca.pem; \
        export PIP_CERT=/tmp/build/pip-ca.pem; \
    fi; \
    python -m pip install --no-cache-dir --progress-bar off -c /tmp/build/constraints.txt -r /tmp/build/requirements.txt \
        || { echo "pip install failed. If pip reported a conflict, requirements.txt does not fit the torch of" \
                  "BASE_IMAGE ($torch_pin): choose a base image whose torch accepts them." >&2; exit 1; }; \
    python -c "import torch, importlib.metadata as m; assert 'torch==' + m.version('torch') == '$torch_pin', 'torch changed'"; \
    rm -rf /tmp/build /root/.cache

WORKDIR /opt/algorithm
COPY process.py /opt/algorithm/
COPY app/ /opt/algorithm/app/
COPY model/ /opt/algorithm/model/
# Owned by root and read-only for the algorithm user. Files written with mkstemp (e.g. freshly exported weights) are
# 0600 in a working tree: make everything readable (COPY --chmod would need BuildKit).
RUN chmod -R a+rX /opt/algorithm

USER algorithm
ENTRYPOINT python -m process $0 $@
