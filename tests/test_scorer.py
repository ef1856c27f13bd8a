"""The answer scorer: pairs, input encoding, split, trl RewardTrainer on the tiny model (CPU), reload, scoring,
the scorer strategy in the strategy table, and clear errors for unusable input."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from kit.learn.data import DataError
from kit.learn.scorer import (
    META_FILE,
    InputFormat,
    Scorer,
    build_pairs,
    encode,
    reward_config,
    scorer_strategy,
    split_problems,
    train_scorer,
)
from kit.offline.selection import STRATEGIES, Candidate, problems_from_pool, strategy_table
from kit.runtime.tiny_model import build_tiny_model
from training.scorer import main as scorer_main

TINY_YAML = "training/configs/scorer_tiny.yaml"


@pytest.fixture(scope="module")
def tiny() -> Path:
    return build_tiny_model()


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


def C(answer, rank, text="") -> Candidate:
    return Candidate(answer=answer, tokens=10, finish_rank=rank, text=text)


# --- pairs, encoding, split ------------------------------------------------------------------------


def test_pairs_are_correct_vs_wrong_answered_samples_of_one_problem() -> None:
    problems = [
        ("a", "A?", 5, [C(5, 0, "a-good1"), C(5, 1, "a-good2"), C(6, 2, "a-bad"), C(None, 3, "a-none")]),
        ("b", "B?", 1, [C(1, 0, "b-good"), C(1, 1, "b-good2")]),  # no wrong sample: no pair
        ("c", "C?", None, [C(1, 0, "c1"), C(2, 1, "c2")]),  # ungraded: no pair
        ("d", "D?", 3, [C(3, 0, "d-good")] + [C(k, k, f"d-bad{k}") for k in range(4, 14)]),
    ]
    pairs = build_pairs(problems, pairs_per_problem=4, seed=0)
    assert {p.problem_id for p in pairs} == {"a", "d"}
    assert sorted(p.chosen for p in pairs if p.problem_id == "a") == ["a-good1", "a-good2"]
    assert all(p.rejected == "a-bad" for p in pairs if p.problem_id == "a")  # never the abstention
    d = [p for p in pairs if p.problem_id == "d"]
    assert len(d) == 4 and len({p.rejected for p in d}) == 4 and all(p.chosen == "d-good" for p in d)
    assert all(p.problem == {"a": "A?", "d": "D?"}[p.problem_id] for p in pairs)
    assert build_pairs(problems, pairs_per_problem=4, seed=0) == pairs  # seeded
    assert build_pairs(problems, pairs_per_problem=4, seed=1) != pairs


def test_no_learnable_pair_is_a_clear_error(tmp_path: Path) -> None:
    """A pool where every sample is right (or every one wrong) cannot train a scorer: DataError naming it,
    and the CLI prints one line and exits 2."""
    pool = tmp_path / "all_right.jsonl.gz"
    with gzip.open(pool, "wt") as fh:
        for i in range(3):
            fh.write(json.dumps({"idx": i, "question": f"What is {i}+1?", "gt": str(i + 1),
                                 "code": [f"So \\boxed{{{i + 1}}}."] * 2}) + "\n")
    with pytest.raises(DataError, match=r"all_right.jsonl.gz.*no problem has both a correct and a wrong"):
        build_pairs(problems_from_pool(pool), source=str(pool))
    with pytest.raises(DataError, match="no problem has both"):
        build_pairs([])


def test_cli_reports_unusable_input_in_one_line(tmp_path: Path, capsys) -> None:
    pool = tmp_path / "all_wrong.jsonl"
    pool.write_text("".join(json.dumps({"idx": i, "question": "Q", "gt": "7", "code": ["\\boxed{8}", "none"]}) + "\n"
                            for i in range(4)))
    rc = scorer_main(["--config", TINY_YAML, "--pool", str(pool), "--holdout_fraction", "0.0",
                      "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "no problem has both a correct and a wrong" in err and str(pool) in err
    rc = scorer_main(["--config", TINY_YAML, "--records", "runs/x.jsonl"])
    assert rc == 2 and "exactly one of 'pool' and 'records'" in capsys.readouterr().err


@pytest.mark.slow
def test_records_give_pairs_with_their_recorded_problem_texts(tmp_path: Path) -> None:
    from kit.cli import main as kit_main
    from kit.runtime.records import RunRecorder
    from training.scorer import ScorerConfig, load_problems_for

    assert kit_main(["dryrun", "--engine", "replay", "--limit", "3", "--samples", "6", "--max-tokens", "100000",
                     "--out", str(tmp_path / "run")]) == 0
    records = tmp_path / "run" / "records.jsonl"
    problems, source = load_problems_for(ScorerConfig(pool=None, records=str(records), use_cpu=True))
    assert source == str(records) and len(problems) == 3
    assert all(len(text) > 50 and gold is not None and cands for _, text, gold, cands in problems)
    bare = tmp_path / "bare.jsonl"  # records without texts (and no problem set to read them from)
    with RunRecorder(bare) as rec:
        rec.write("sample", problem_id="zz", index=0, answer=1, tokens=5, text="t", finish_reason="stop")
        rec.write("problem", problem_id="zz", gold=1, answer=1)
    with pytest.raises(DataError, match=r"no text for problem id\(s\) \['zz'\].*set 'problems'"):
        load_problems_for(ScorerConfig(pool=None, records=str(bare), use_cpu=True))


def test_encode_keeps_the_problem_head_and_the_sample_tail(tokenizer) -> None:
    fmt = InputFormat(max_length=64, max_problem_tokens=16)
    problem = "Find the number of ordered pairs of integers such that the sum of their squares is prime. " * 3
    text = " ".join(f"step{k}" for k in range(500)) + " Therefore the answer is \\boxed{042}."
    ids = encode(tokenizer, problem, text, fmt)
    assert len(ids) == 64 and ids[-1] == tokenizer.eos_token_id
    decoded = tokenizer.decode(ids)
    assert decoded.startswith("Problem:\nFind the number") and "\n\nSolution:\n" in decoded
    assert decoded.endswith("\\boxed{042}." + tokenizer.eos_token) and "step0 " not in decoded
    head = tokenizer.decode(encode(tokenizer, problem, text, InputFormat(64, 16, keep="head")))
    assert "step0 step1" in head and "boxed" not in head
    short = encode(tokenizer, "Q", "short answer \\boxed{1}", fmt)
    assert len(short) < 64 and tokenizer.decode(short).endswith("\\boxed{1}" + tokenizer.eos_token)
    with pytest.raises(ValueError, match="max_length"):
        InputFormat(max_length=20, max_problem_tokens=16)


def test_split_is_by_problem_disjoint_and_seeded() -> None:
    ids = [str(i) for i in range(30)] * 3  # repeated ids (several samples each) count once
    train, hold = split_problems(ids, 0.3, seed=0)
    assert len(hold) == 9 and len(train) == 21 and not set(train) & set(hold)
    assert set(train) | set(hold) == {str(i) for i in range(30)}
    assert split_problems(ids, 0.3, seed=0) == (train, hold)
    assert split_problems(ids, 0.3, seed=1)[1] != hold


# --- training on CPU -------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_trains_on_the_skythought_pool_and_the_scorer_ranks_held_out_problems(tmp_path: Path, capsys) -> None:
    out = tmp_path / "scorer"
    rc = scorer_main(["--config", TINY_YAML, "--output_dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "hold-out (9 problems" in capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    train, hold = set(meta["train_problems"]), set(meta["holdout_problems"])
    assert len(train) == 21 and len(hold) == 9 and not train & hold
    assert 0.0 <= meta["holdout_pair_accuracy"] <= 1.0 and meta["holdout_pairs"] > 0
    assert list(out.glob("checkpoint-*")) == []  # save_strategy "no": only the final model

    scorer = Scorer.load(out, batch_size=3)
    assert type(scorer.model).__name__ == "Qwen2ForSequenceClassification"
    problems = problems_from_pool("skythought_aime24")
    held = [p for p in problems if p[0] in hold]
    _, text, _, cands = held[0]
    texts = [c.text for c in cands[:5]]
    batched = scorer.score(text, texts)
    one_by_one = [scorer.score(text, [t])[0] for t in texts]
    assert batched == pytest.approx(one_by_one, abs=1e-4)  # padding does not change a score
    assert len(set(round(s, 6) for s in batched)) > 1

    # the strategy runs in the table on the hold-out problems only; filled scores give the same choices
    strategies = {"majority": STRATEGIES["majority"], "scorer": scorer_strategy(scorer)}
    table = strategy_table(held, strategies, n_boot=100)
    assert table["n"].to_list() == [9, 9]
    filled = scorer.fill(held)
    assert all(c.score is not None for _, _, _, cands in filled for c in cands if c.answer is not None)
    assert strategy_table(filled, strategies, n_boot=100).equals(table)


def _marked_problems(n: int, seed: int, n_correct: int = 2, n_wrong: int = 2, prefix: str = "p"):
    """Problems whose correct samples say "checked" and wrong ones "unsure": a scorer that learns anything
    learns that. The wrong samples of a problem share one wrong answer (a distractor)."""
    rng = random.Random(seed)
    words = ["we", "add", "the", "sum", "of", "squares", "so", "then"]
    out = []
    for k in range(n):
        gold = rng.randrange(1000)
        distractor = (gold + 1 + rng.randrange(50)) % 1000
        cands = []
        for j, ok in enumerate([True] * n_correct + [False] * n_wrong):
            answer = gold if ok else distractor
            filler = " ".join(rng.choice(words) for _ in range(12))
            verdict = "Check: substituting back works." if ok else "Hmm, this does not match, but we go on."
            cands.append(Candidate(answer, 50, j, text=f"{filler} {verdict} The answer is \\boxed{{{answer}}}."))
        out.append((f"{prefix}{k}", f"Problem {prefix}{k}: find x.", gold, cands))
    return out


@pytest.mark.slow
def test_training_learns_a_signal_that_generalises_to_held_out_problems(tmp_path: Path, tiny) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    problems = _marked_problems(24, seed=0)
    train_ids, hold_ids = split_problems([p[0] for p in problems], 0.25, seed=0)
    train = [p for p in problems if p[0] in train_ids]
    hold = [p for p in problems if p[0] in hold_ids]
    fmt = InputFormat(max_length=64, max_problem_tokens=16)
    pairs = build_pairs(hold, pairs_per_problem=4)

    def margin(scorer: Scorer) -> tuple[float, float]:
        good = scorer.score_many([(p.problem, p.chosen) for p in pairs])
        bad = scorer.score_many([(p.problem, p.rejected) for p in pairs])
        return (sum(g - b for g, b in zip(good, bad, strict=True)) / len(pairs),
                sum(g > b for g, b in zip(good, bad, strict=True)) / len(pairs))

    base = Scorer(AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1),
                  AutoTokenizer.from_pretrained(tiny), fmt)
    base_margin, _ = margin(base)
    result = train_scorer(str(tiny), train, tmp_path / "s", holdout=hold, fmt=fmt, pairs_per_problem=4,
                          args=reward_config(tmp_path / "trainer", max_length=fmt.max_length, max_steps=8,
                                             per_device_train_batch_size=8, learning_rate=3e-3,
                                             center_rewards_coefficient=None, logging_steps=100))
    trained_margin, accuracy = margin(Scorer.load(result.path))
    assert abs(base_margin) < 0.1  # a fresh head has no opinion
    assert trained_margin > 1.0 and accuracy >= 0.9  # held-out problems: correct samples now score higher
    assert result.holdout_pair_accuracy == pytest.approx(accuracy)
    # reranking beats the vote where most samples agree on a wrong answer (1 right vs 3 alike wrong), on
    # problems the scorer never saw
    outvoted = _marked_problems(6, seed=7, n_correct=1, n_wrong=3, prefix="new")
    strategies = {"majority": STRATEGIES["majority"], "scorer": scorer_strategy(Scorer.load(result.path), "best")}
    table = strategy_table(outvoted, strategies, n_boot=10)
    assert table["accuracy"].to_list() == [0.0, 1.0]


# --- loading errors --------------------------------------------------------------------------------


def test_loading_something_that_is_not_a_scorer(tmp_path: Path, tiny) -> None:
    with pytest.raises(FileNotFoundError, match="not a scorer folder"):
        Scorer.load(tiny)
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "mismatch"
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(tiny)
    tok.add_tokens([f"<extra{i}>" for i in range(4096)])
    tok.save_pretrained(folder)
    (folder / META_FILE).write_text(json.dumps({"format": {"max_length": 64, "max_problem_tokens": 16,
                                                           "keep": "tail", "version": 1}}))
    with pytest.raises(ValueError, match=r"tokenizer .* does not match the model"):
        Scorer.load(folder)
    (folder / META_FILE).write_text(json.dumps({"format": {"max_length": 64, "version": 0}}))
    with pytest.raises(ValueError, match="format version 0"):
        Scorer.load(folder)
    shutil.rmtree(folder)
