"""The child process: llama.cpp's own server (from the `xllamacpp` wheel) for one GGUF file.

`python -m server.local.child --model FILE --port N ...` loads the model, serves llama.cpp's
OpenAI-compatible endpoints (`/v1/chat/completions` streaming, `/health`, ...) on the loopback
port, and runs until it is signalled. The generation settings are the server's defaults for any
request that leaves them out (the Chat Completions provider sends none): temperature, repeat
penalty (and DRY, against copying earlier turns) and the answer-length cap (`n_predict`).
Prompts reuse the KV cache of the previous request's common prefix (`cache_prompt`, and chunk
reuse after a shift, `n_cache_reuse`), so a long room's next turn reads only what is new.
Requests need the API key the parent passes in `ROUNDTABLE_LOCAL_API_KEY` (`/health` is
open), so no other local program uses the model.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .model_file import gguf_strings
from .supervisor import NOTE

API_KEY_ENV = "ROUNDTABLE_LOCAL_API_KEY"
# Smallest shifted chunk of an earlier prompt worth reusing from the cache (tokens).
CACHE_REUSE_TOKENS = 64
# Host-memory prompt cache (llama.cpp's default is 8 GiB); one room's prompts fit in a little.
CACHE_RAM_MIB = 128
# DRY ("don't repeat yourself") penalises continuing any sequence already in the context: a
# 135M model otherwise tends to answer each turn with a copy of its previous answer.
DRY_MULTIPLIER = 0.8


def threads() -> int:
    """Compute threads: all cores but one (at most 4). The last core stays with Roundtable's
    own fan-out; and llama.cpp's OpenMP threads wait for each other by spinning, so one that
    shares a core with a busy process stalls the rest (on a loaded 2-core machine two threads
    generated 5 to 80 tokens/s, one thread a steady 75 to 95)."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))

# Gemma 3's chat template (as in Google's tokenizer_config.json), for Gemma GGUF files that were
# converted without one (llama.cpp would otherwise fall back to another format and the model would
# answer in template tokens). Unlike the original it does not raise when two user turns follow
# each other (a turn whose answer failed) or content is null.
GEMMA_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = (messages[0]['content'] or '') + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"""


def chat_template(model: Path) -> tuple[str, str]:
    """(template, where it comes from): "" means the model's own, from its GGUF metadata."""
    meta = gguf_strings(model, ("tokenizer.chat_template", "general.architecture"))
    if meta.get("tokenizer.chat_template"):
        return "", "the model's own (GGUF metadata)"
    if meta.get("general.architecture", "").startswith("gemma"):
        return GEMMA_CHAT_TEMPLATE, "Gemma 3's (the GGUF has none)"
    return "", "llama.cpp's fallback (the GGUF has none; answers may be poor)"


def note(text: str) -> None:
    """A line the parent logs at INFO."""
    print(f"{NOTE}{text}", file=sys.stderr, flush=True)


def serve(args: argparse.Namespace) -> int:
    """Load the model and serve it until SIGTERM/SIGINT."""
    import xllamacpp

    template, source = chat_template(Path(args.model))
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.context
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads()
    params.n_parallel = 1  # one answer at a time per room; the whole window for it
    params.n_predict = args.max_tokens
    params.sampling.temp = args.temperature
    params.sampling.penalty_repeat = args.repeat_penalty
    params.sampling.dry_multiplier = DRY_MULTIPLIER
    params.sampling.dry_penalty_last_n = args.context
    params.cache_prompt = True
    params.n_cache_reuse = CACHE_REUSE_TOKENS
    params.cache_ram_mib = CACHE_RAM_MIB
    params.use_jinja = True
    if template:
        params.chat_template = template
    key = os.environ.get(API_KEY_ENV, "")
    if key:
        params.api_keys = [key]
    params.cors_origins = ""  # no browser page may call it
    note(f"chat template: {source}")
    server = xllamacpp.Server(params)  # returns once the model is loaded and the port open
    note(f"serving {args.alias} on {server.listening_address} (context {args.context}, "
         f"at most {args.max_tokens} tokens an answer)")
    received = signal.sigwait({signal.SIGTERM, signal.SIGINT})
    note(f"stopping on {signal.Signals(received).name}")
    # llama.cpp's server threads hold no state worth saving: leave without joining them.
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.local.child", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--alias", required=True, help="the model's name in the API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--repeat-penalty", type=float, default=1.1)
    args = parser.parse_args(argv)
    # sigwait needs the signals blocked first; a blocked SIGTERM still ends the process once
    # sigwait returns and main exits.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
