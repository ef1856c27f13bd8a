"""How a model's turns are turned into prompts, tool calls and a final text (docs/architecture.md).

``tir`` holds the text protocol's tool-call formats: where a code block starts and ends in the model's
text, what stops generation at a call, and how the sandbox's output is written back.
"""
