"""Verifiable rewards: reward functions that check an answer against the data row's gold columns.

Point `--reward_function` of PPO, RLOO, GRPO, evaluate.py or rejection_sampling.py at one of them, e.g.
`--reward_function rlhfkit.verifiers:exact_number`. Each has TRL's signature, gets the row's other columns as keyword
arguments (one list per column, one entry per answer) and returns one float per answer, 1.0 right and 0.0 wrong:

    exact_number  column `answer` (a number): the last number in the answer equals it (arithmetic, GSM8K-style)
    math_answer   column `answer` (text or LaTeX): Hugging Face's `math-verify` finds the two equivalent
    ifeval        columns `instruction_id_list`, `kwargs` (IFEval rows): the share of the prompt's instructions the
                  answer follows, strict (Zhou et al. 2023, arXiv:2311.07911), with the checkers shipped in
                  `lm-eval` (`pip install 'lm-eval[ifeval]==0.4.13'`); 1.0 when all are followed (prompt-level accuracy)

Each names the columns it needs in `gold_columns`; every script checks them on every prompt row before any weights
load (`rlhfkit.reward.check_gold_columns`, which reads the same attribute on your own functions). A missing column at
scoring time raises `ValueError` naming it: a verifier never scores without its gold answer. evaluate.py reports a
function whose scores all lie in [0, 1] as an accuracy (share of answers scored 1.0).
"""

from __future__ import annotations

import re

from rlhfkit.errors import ConfigError

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def answer_texts(completions: list) -> list[str]:
    """The answer text of each completion (`[{"role": "assistant", "content": text}]` or a plain string)."""
    return [c[-1]["content"] if isinstance(c, list) else c for c in completions]


def gold(column: list | None, name: str, verifier: str, n: int) -> list:
    """The gold column, checked: one entry per answer. Raises `ValueError` naming the column when it is missing."""
    if column is None or any(g is None for g in column):
        raise ValueError(f"{verifier} needs the gold column '{name}' in every data row (it reaches reward functions "
                         f"as a keyword argument); the data has none or some rows lack it")
    if len(column) != n:
        raise ValueError(f"{verifier}: {len(column)} values of '{name}' for {n} answers")
    return column


def last_number(text: str) -> float | None:
    """The last number written in `text` (`-12`, `1,024`, `3.5`; thousands commas ignored), or None."""
    found = NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def exact_number(prompts, completions, completion_ids=None, answer=None, **kwargs) -> list[float]:
    """1.0 where the last number in the answer equals the row's `answer` (a number or numeric text), else 0.0."""
    texts = answer_texts(completions)
    golds = gold(answer, "answer", "exact_number", len(texts))
    return [float(last_number(t) == float(str(g).replace(",", ""))) for t, g in zip(texts, golds)]


exact_number.gold_columns = ("answer",)


def math_answer(prompts, completions, completion_ids=None, answer=None, **kwargs) -> list[float]:
    r"""1.0 where `math-verify` finds the answer's final expression equivalent to the row's `answer` (text or LaTeX,
    e.g. `\\frac{1}{2}` and `0.5`), else 0.0.
    """
    from math_verify import parse, verify  # sympy underneath: slow to import

    texts = answer_texts(completions)
    golds = gold(answer, "answer", "math_answer", len(texts))
    return [float(bool(verify(parse(str(g)), parse(t)))) for t, g in zip(texts, golds)]


math_answer.gold_columns = ("answer",)


NEEDS_PUNKT = ("length_constraints:number_sentences", "change_case:capital_word_frequency")  # nltk tokenizer data


def ifeval_function():
    """Build `ifeval` (see the module docstring); raises `ConfigError` with the install line if `lm-eval` is not
    installed. Runs when `--reward_function rlhfkit.verifiers:ifeval` is imported, before any weights load.
    """
    try:
        import langdetect
        from lm_eval.tasks.ifeval.utils import InputExample, test_instruction_following_strict
    except ImportError as error:
        raise ConfigError(f"--reward_function rlhfkit.verifiers:ifeval needs the IFEval checkers of lm-eval "
                          f"({error}): pip install 'lm-eval[ifeval]==0.4.13'") from error
    langdetect.DetectorFactory.seed = 0  # the language checks sample: the same answer gets the same score

    def ifeval(prompts, completions, completion_ids=None, instruction_id_list=None, kwargs=None,
               **columns) -> list[float]:
        """Share of each prompt's IFEval instructions the answer follows (strict); 1.0: all followed."""
        texts = answer_texts(completions)
        ids = gold(instruction_id_list, "instruction_id_list", "ifeval", len(texts))
        arguments = gold(kwargs, "kwargs", "ifeval", len(texts))
        scores = []
        for prompt, text, id_list, args in zip(prompts, texts, ids, arguments):
            question = prompt[-1]["content"] if isinstance(prompt, list) else prompt
            example = InputExample(key=0, instruction_id_list=list(id_list), prompt=question,
                                   kwargs=[dict(a or {}) for a in args])
            try:
                followed = test_instruction_following_strict(example, text).follow_instruction_list
            except LookupError as error:  # nltk's tokenizer data, which lm-eval downloads on import when online
                raise ConfigError(f"IFEval instructions {', '.join(id_list)}: a checker needs nltk's tokenizer data, "
                                  f"which is not installed: python -m nltk.downloader punkt punkt_tab (offline: "
                                  f"leave out prompts with {' or '.join(NEEDS_PUNKT)})") from error
            scores.append(sum(followed) / len(followed) if followed else 0.0)
        return scores

    ifeval.gold_columns = ("instruction_id_list", "kwargs")
    return ifeval


def __getattr__(name: str):
    if name == "ifeval":  # built on first use, so that the other verifiers do not import lm-eval
        return ifeval_function()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
