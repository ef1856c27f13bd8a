"""Prompt templates: chain-of-thought and tool-integrated, with the competition's answer rule.

The AIMO2 2nd place mixed 7 CoT and 8 code prompts per question; the mix is a solver option
(``SolverConfig.prompts`` is cycled over samples). ``{problem}`` and ``{answer_rule}`` are filled in;
``answer_rule`` comes from the competition profile (e.g. "…modulo 1000").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    kind: Literal["cot", "tir"]
    user: str
    system: str = ""

    def __post_init__(self) -> None:
        if "{problem}" not in self.user:
            raise ValueError(f"prompt {self.name!r}: the user template must contain '{{problem}}'")

    def messages(self, problem: str, answer_rule: str) -> list[dict[str, str]]:
        # str.replace, not str.format: problems contain LaTeX braces
        user = self.user.replace("{problem}", problem).replace("{answer_rule}", answer_rule).strip()
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return [*msgs, {"role": "user", "content": user}]


COT = PromptTemplate(
    name="cot",
    kind="cot",
    user="{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}. {answer_rule}",
)

TIR = PromptTemplate(
    name="tir",
    kind="tir",
    user=(
        "{problem}\n\nSolve the problem step by step. You may write Python code in ```python blocks; each "
        "block is executed and its printed output is shown to you in an ```output block. Use code to "
        "compute and check, then put your final answer within \\boxed{}. {answer_rule}"
    ),
)

DEFAULT_PROMPTS: tuple[PromptTemplate, ...] = (COT, TIR)

HARMONY_TIR = PromptTemplate(
    name="harmony",
    kind="tir",
    user=(
        "{problem}\n\nSolve the problem; use the python tool to compute and check your work. "
        "{answer_rule} Put the final answer within \\boxed{}."
    ),
)
"""The user message of a gpt-oss attempt with the python tool (Harmony protocol): the AIMO3 notebooks sent
the problem and a short answer instruction, nothing else — the system message declares the tool."""
