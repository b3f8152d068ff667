"""The embedded local model: llama.cpp's server (the `xllamacpp` wheel) as an owned child.

With no `OPENAI_API_KEY` and no `OPENAI_BASE_URL` (or with `LLM_API=local`) Roundtable runs it on
a loopback port and talks to it through the unchanged Chat Completions provider.

- `model_file`: which GGUF (the bundled SmolLM2-135M-Instruct, SHA-256 checked, or
  `LOCAL_MODEL_PATH`) and the few metadata keys the child reads;
- `supervisor`: a generic owned child process (health check, restart with backoff, stop, dies
  with its parent);
- `child`: the child itself (`python -m server.local.child`);
- `model_server`: `LocalModelServer`, the two put together from the settings.

`python -m server.local needed` exits 0 when the settings select the local model (the Makefile
installs the runtime and model only then).
"""

from .errors import LocalModelError
from .model_server import LocalModelServer

__all__ = ["LocalModelError", "LocalModelServer"]
