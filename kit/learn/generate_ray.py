"""``kit generate --ray``: the same generation on a Ray cluster, one engine replica per actor.

Ray is the only dependency for more than one machine (no home-made RPC): the driver puts the missing
(problem, sample) items on one :class:`ray.util.queue.Queue`; each replica actor starts its engine (vLLM on
the configured model with the GPUs of the preset's tensor-parallel size, or the tiny model / replay engine on
CPU) and keeps ``max_num_seqs`` workers pulling from the queue, so fast replicas take more. Each replica
writes its own part (``parts/records-replica<k>.jsonl``); the driver merges them as a local run does.

A replica that dies (its process killed, its node lost) loses only the samples it had in flight: the records
are the truth, so after every round the driver re-queues whatever is still not recorded to fresh replicas
(at most ``MAX_ROUNDS`` rounds). How to start a cluster and point the command at it: docs/generate.md.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from kit.learn.generate import (
    PARTS,
    GenerateError,
    GenerateOptions,
    GenerateReport,
    Item,
    generate_items,
    merge,
    open_solver,
    prepare,
    recorded,
    run_start_fields,
    spec_of,
    start_engine,
)
from kit.runtime.engines.presets import get_preset
from kit.runtime.problems import Problem
from kit.runtime.records import RunRecorder
from kit.runtime.run_config import ResolvedConfig

MAX_ROUNDS = 3
"""Rounds of re-queueing what dead replicas left unrecorded before the driver gives up (said, not raised)."""
CPU_REPLICA_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
"""vLLM on CPU inside a Ray actor: the engine core in the actor's own process, 1 GiB of KV cache each
(set before vLLM is imported)."""


def connect(address: str, console: Console) -> bool:
    """Join the cluster at ``address`` (``local``: start one on this machine); whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if address not in ("local", "auto"):
        _check_reachable(address)
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
            console.print(f"[dim]ray: started a local cluster ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)[/]")
            return True
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's own words say why
        raise GenerateError(f"--ray {address}: no Ray cluster answers there ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    console.print(f"[dim]ray: joined {address} ({ray.cluster_resources()})[/]")
    return False


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster address (``host:port`` or ``ray://host:port``) answers on TCP within ``timeout`` s: Ray itself
    keeps retrying an absent head for minutes."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise GenerateError(f"--ray {address}: not a cluster address (host:port, ray://host:port, auto or local)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise GenerateError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def replica_count(opts: GenerateOptions, gpus_per_replica: int) -> int:
    import ray

    if opts.replicas is not None:
        if opts.replicas < 1:
            raise GenerateError(f"--replicas must be >= 1, got {opts.replicas}")
        return opts.replicas
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return max(1, gpus // gpus_per_replica) if gpus and gpus_per_replica else 2


def run_generate_ray(opts: GenerateOptions, *, console: Console | None = None) -> GenerateReport:
    """Generate this writer's missing items on the Ray cluster ``opts.ray``, then merge."""
    import ray
    from ray.util.queue import Queue

    console = console or Console()
    items, todo = prepare(opts)
    report = GenerateReport(out=opts.out, items=len(items), skipped=len(items) - len(todo))
    started = connect(opts.ray or "auto", console)
    try:
        on_gpu = opts.run.config.engine == "vllm" and not opts.run.tiny
        gpus = get_preset(opts.run.preset).tensor_parallel_size if on_gpu else 0
        n = replica_count(opts, gpus)
        start, rounds, made = time.monotonic(), 0, 0
        while todo and rounds < MAX_ROUNDS:
            rounds += 1
            queue = Queue()
            for item in todo:
                queue.put((item.problem.id, item.problem.problem, item.problem.answer, item.index))
            console.print(f"kit generate --ray: round {rounds}, {len(todo)} samples on {n} replicas")
            actor = Replica.options(num_cpus=1, num_gpus=gpus)
            replicas = [actor.remote(opts.run, str(opts.out), f"replica{made + k}", spec_of(
                opts.run, opts.problem_source, opts.samples)) for k in range(n)]
            made += n
            pending = [r.run.remote(queue) for r in replicas]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    report.generated += ray.get(done[0])
                except ray.exceptions.RayActorError as exc:
                    console.print(f"[yellow]a replica died ({type(exc).__name__}); what it had in flight is "
                                  "generated again[/]")
            for r in replicas:
                ray.kill(r)
            queue.shutdown()
            done_keys = recorded(opts.out)
            todo = [i for i in todo if i.key not in done_keys]
        if todo:
            console.print(f"[red]{len(todo)} samples still unrecorded after {rounds} rounds: re-run the command[/]")
        report.seconds = time.monotonic() - start
    finally:
        if started:
            ray.shutdown()
    merge(opts.out, opts.problems, opts.samples, opts.run, report)
    report.tokens = report.merged_tokens  # the replicas' own counts stay in their processes
    return report


def _replica_class() -> Any:
    import ray

    @ray.remote(max_restarts=0)
    class Replica:
        """One engine; pulls items from the driver's queue until it is empty."""

        def __init__(self, run: ResolvedConfig, out: str, name: str, spec: dict[str, Any]) -> None:
            self.run_config, self.out, self.name, self.spec = run, out, name, spec

        async def run(self, queue: Any) -> int:
            if self.run_config.tiny or self.run_config.config.engine != "vllm":
                os.environ.update(CPU_REPLICA_ENV)
            from ray.util.queue import Empty

            engine = await start_engine(self.run_config, None, lambda m: None)
            recorder = RunRecorder(Path(self.out) / PARTS / f"records-{self.name}.jsonl")
            recorder.write("run_start", **run_start_fields(self.run_config, engine, self.spec, self.name),
                           pid=os.getpid())
            count = 0

            def counted(_: dict) -> None:
                nonlocal count
                count += 1

            async def next_item() -> Item | None:
                try:
                    pid, text, answer, index = await queue.get_async(block=False)
                except Empty:
                    return None
                return Item(Problem(pid, text, answer), index)

            solver = open_solver(self.run_config, engine, recorder, counted)
            try:
                await generate_items(solver, next_item)
            finally:
                if solver.sandbox is not None:
                    solver.sandbox.shutdown()
                recorder.close()
                await asyncio.wait_for(engine.close(), timeout=60)
            return count

    return Replica


class _LazyReplica:
    """``Replica`` built on first use: importing this module does not import Ray."""

    _cls: Any = None

    def options(self, **kw: Any) -> Any:
        if _LazyReplica._cls is None:
            _LazyReplica._cls = _replica_class()
        return _LazyReplica._cls.options(**kw)


Replica = _LazyReplica()

__all__ = ["MAX_ROUNDS", "Replica", "connect", "run_generate_ray"]
