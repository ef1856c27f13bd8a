"""Learning check: GRPO with the Arora–Zanette length penalty shortens reasoning while reward rises.

A toy task the random tiny Qwen2 can learn on a CPU in minutes: every prompt ("Compute a + b.", a + b = 7)
has the answer 7. The tiny model closes its babbling reasoning after a few dozen tokens and then boxes
a digit 1–9 (kit/tiny_model.py), so about one sample in ten is right at step 0: correctness is reachable
and GRPO has a signal. Two arms run through ``training.grpo.run`` (the real entry point: trl's
GRPOTrainer, our rewards, the matched settings ``scale_rewards: none`` + ``loss_type: dapo``), same seed,
same data, side by side:

* **penalised** — reward ``efficiency`` (α = 0.4): 1{correct}·(1 − α·σ(z_len among the correct)),
* **baseline**  — reward ``accuracy``: the same run without the length penalty.

Each arm also logs the other arm's reward at weight 0 (trl computes and logs a zero-weight reward
without training on it), so accuracy and the penalised reward are comparable across arms at every step.

The check passes when, in the penalised arm, mean completion length over the last ``--window`` steps is
below ``--max-length-ratio`` × that of the first steps while the reward rose by at least
``--min-reward-gain``, and its final length is shorter than the baseline's with accuracy no worse than
the baseline's minus 0.1. Prints per-step figures and the ratios, writes the plot, exits 1 on failure.

    .venv/bin/python bench/grpo_toy.py            # ~5-10 min on 2 shared CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from training.grpo import GrpoConfig, run

ANSWER = 7
LENGTH = "completions/mean_length"
ACCURACY = "rewards/accuracy_reward/mean"
EFFICIENCY = "rewards/efficiency_reward/mean"


def write_toy_data(path: Path, n: int, seed: int) -> None:
    """``n`` RL rows in training.curate's layout, every answer :data:`ANSWER`."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            a = rng.randint(0, ANSWER)
            row = {"problem_id": f"toy-{i}", "source": "toy", "prompt": f"Compute {a} + {ANSWER - a}.",
                   "answer": ANSWER}
            fh.write(json.dumps(row) + "\n")


def arm_config(arm: str, data: Path, out: Path, args: argparse.Namespace) -> GrpoConfig:
    penalised = arm == "penalised"
    return GrpoConfig(
        model="tiny", data=str(data), output_dir=str(out / arm), rewards=["efficiency", "accuracy"],
        reward_weights=[1.0, 0.0] if penalised else [0.0, 1.0], reward_params={"efficiency": {"alpha": args.alpha}},
        num_generations=8, per_device_train_batch_size=args.prompts_per_step * 8, max_prompt_length=256,
        max_completion_length=64, learning_rate=args.lr, lr_scheduler_type="constant", max_steps=args.steps,
        seed=args.seed, temperature=1.0, scale_rewards="none", loss_type="dapo", logging_steps=1,
        save_strategy="no", gradient_checkpointing=False, use_cpu=True, bf16=False,
        model_init_kwargs={"dtype": "float32"}, report_to="none",
        # The guards are tested elsewhere; here the baseline reaching 100% accuracy (every group flat)
        # is an expected outcome, not a fault.
        guard_action="warn", guard_preflight_max_truncated=None, guard_max_truncated=None, guard_max_zero_std=None)


def window_mean(history: Sequence[dict[str, float]], key: str, start: int, stop: int | None) -> float:
    values = [h[key] for h in history[start:stop]]
    return sum(values) / len(values)


def plot(histories: dict[str, list[dict[str, float]]], path: Path, alpha: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_len, ax_rew) = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {"penalised": ("tab:blue", f"efficiency reward (α={alpha})"), "baseline": ("tab:gray", "accuracy only")}
    for arm, hist in histories.items():
        color, label = styles[arm]
        steps = [h["step"] for h in hist]
        ax_len.plot(steps, [h[LENGTH] for h in hist], color=color, label=label)
        ax_rew.plot(steps, [h[ACCURACY] for h in hist], color=color, label=f"{label}: accuracy")
        ax_rew.plot(steps, [h[EFFICIENCY] for h in hist], color=color, linestyle="--",
                    label=f"{label}: efficiency reward")
    ax_len.set(xlabel="GRPO step", ylabel="mean completion length (tokens)", title="Completion length")
    ax_rew.set(xlabel="GRPO step", ylabel="mean over the step's samples", title="Accuracy and reward", ylim=(0, 1.05))
    ax_len.legend()
    ax_rew.legend(fontsize=7)
    fig.suptitle("GRPO on the toy task (tiny Qwen2, CPU): length penalty vs none, same seed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--prompts-per-step", type=int, default=4, help="prompt groups of 8 samples per step")
    ap.add_argument("--alpha", type=float, default=0.4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=5, help="steps averaged at the start and the end")
    ap.add_argument("--max-length-ratio", type=float, default=0.7)
    ap.add_argument("--min-reward-gain", type=float, default=0.2)
    ap.add_argument("--plot", type=Path, default=Path("docs/img/grpo_toy.png"))
    args = ap.parse_args(argv)
    if args.steps < 2 * args.window:
        ap.error("--steps must be at least twice --window")

    histories: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="grpo-toy-") as tmp:
        data = Path(tmp) / "rl.jsonl"
        write_toy_data(data, 64, args.seed)
        for arm in ("penalised", "baseline"):
            result = run(arm_config(arm, data, Path(tmp), args))
            seconds[arm] = result.seconds  # trainer.train() alone
            histories[arm] = result.history
    total = time.perf_counter() - start

    print(f"\n{'step':>4} | {'penalised: len':>14} {'acc':>5} {'eff':>5} | {'baseline: len':>13} {'acc':>5} {'eff':>5}")
    for p, b in zip(histories["penalised"], histories["baseline"], strict=True):
        print(f"{int(p['step']):>4} | {p[LENGTH]:>14.1f} {p[ACCURACY]:>5.2f} {p[EFFICIENCY]:>5.2f} | "
              f"{b[LENGTH]:>13.1f} {b[ACCURACY]:>5.2f} {b[EFFICIENCY]:>5.2f}")

    w = args.window
    pen, base = histories["penalised"], histories["baseline"]
    len0, len1 = window_mean(pen, LENGTH, 0, w), window_mean(pen, LENGTH, -w, None)
    rew0, rew1 = window_mean(pen, EFFICIENCY, 0, w), window_mean(pen, EFFICIENCY, -w, None)
    acc_pen, acc_base = window_mean(pen, ACCURACY, -w, None), window_mean(base, ACCURACY, -w, None)
    len_base = window_mean(base, LENGTH, -w, None)
    print(f"\nwall time: training {seconds['penalised']:.0f} s (penalised) + {seconds['baseline']:.0f} s (baseline), "
          f"{args.steps} steps each; {total:.0f} s with imports, model and data set-up")
    print(f"penalised arm, first {w} vs last {w} steps: mean length {len0:.1f} -> {len1:.1f} "
          f"(ratio {len1 / len0:.2f}), efficiency reward {rew0:.2f} -> {rew1:.2f}, accuracy "
          f"{window_mean(pen, ACCURACY, 0, w):.2f} -> {acc_pen:.2f}")
    print(f"last {w} steps, penalised vs baseline: mean length {len1:.1f} vs {len_base:.1f} "
          f"(ratio {len1 / len_base:.2f}), accuracy {acc_pen:.2f} vs {acc_base:.2f}")
    plot(histories, args.plot, args.alpha)
    print(f"plot: {args.plot}")

    failures = []
    if not len1 < args.max_length_ratio * len0:
        failures.append(f"length did not fall enough ({len1:.1f} is not < {args.max_length_ratio} x {len0:.1f})")
    if not rew1 >= rew0 + args.min_reward_gain:
        failures.append(f"reward did not rise enough ({rew0:.2f} -> {rew1:.2f}, need +{args.min_reward_gain})")
    if not len1 < len_base:
        failures.append(f"penalised arm not shorter than the baseline ({len1:.1f} vs {len_base:.1f})")
    if not acc_pen >= acc_base - 0.1:
        failures.append(f"penalised arm lost accuracy ({acc_pen:.2f} vs baseline {acc_base:.2f})")
    if failures:
        print("LEARNING CHECK FAILED: " + "; ".join(failures))
        return 1
    print("LEARNING CHECK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
