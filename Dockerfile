# One image for every Treadle process; the command picks the role:
#   docker run IMAGE scheduler --app myapp | gateway | migrate | keys ...
# Two stages: the first installs from uv.lock what runs (the server extra, no
# dev tools, Treadle itself not editable) into /app/.venv; the second holds that
# venv alone (no uv, no sources) and runs as an unprivileged user.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY shared shared
COPY services services
RUN uv sync --frozen --no-dev --extra server --no-editable --compile-bytecode \
    && rm -rf /root/.cache

FROM python:3.11-slim
# A fixed numeric id, so that Kubernetes' runAsNonRoot can check it.
RUN useradd --system --uid 10001 --user-group --home-dir /home/treadle --create-home \
        --shell /usr/sbin/nologin treadle
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TREADLE_DATA_DIR=/home/treadle/data
USER 10001:10001
WORKDIR /home/treadle
# gRPC (scheduler), Prometheus metrics (scheduler), HTTP (gateway)
EXPOSE 50051 9464 8000
ENTRYPOINT ["treadle"]
CMD ["--help"]
