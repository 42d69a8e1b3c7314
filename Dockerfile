# One image for every Treadle process; the command picks the role.
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir uv
COPY pyproject.toml uv.lock README.md ./
COPY shared shared
COPY services services
COPY protos protos
RUN uv sync --frozen --no-dev --extra server --no-editable && rm -rf /root/.cache
ENV PATH="/app/.venv/bin:$PATH"
ENTRYPOINT ["treadle"]
