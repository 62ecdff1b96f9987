# signflow on a CPU: the pipeline (`make run`) in a container.
#   docker build -t signflow .
#   docker run --rm -v "$PWD/out:/signflow/out" signflow            # make run, then copies results to ./out
#   docker run --rm -it signflow bash                               # a shell with the venv on PATH
# Built with the project's constraints.txt, so the image has the versions CI tested.
# Not built here: this machine has a Docker client but no engine (see README).
FROM python:3.11-slim-bookworm

# git: DVC and the MLflow tags read the commit; libgl/libglib: OpenCV's runtime libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git make libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /signflow
# torch's CPU wheels: without this index pip would take the multi-GB CUDA build of the same version.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PIP_NO_CACHE_DIR=1 \
    MPLBACKEND=Agg

# Dependencies first (a layer that survives code edits), then the project.
COPY pyproject.toml constraints.txt README.md ./
COPY src/signflow/__init__.py src/signflow/__init__.py
RUN python -m venv .venv \
    && .venv/bin/pip install --upgrade pip \
    && .venv/bin/pip install -e ".[pipeline]" -c constraints.txt
COPY . .
# A DVC pipeline needs a git repository: the build context is one, or becomes one here.
RUN (git rev-parse --git-dir >/dev/null 2>&1 || (git init -q && git add -A && \
     git -c user.name=signflow -c user.email=signflow@localhost commit -qm "container snapshot")) \
    && touch .venv/.installed

ENV PATH=/signflow/.venv/bin:$PATH
CMD ["sh", "-c", "make run && mkdir -p out && cp -r metrics reports models out/"]
