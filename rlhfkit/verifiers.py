"""Verifiable rewards: reward functions that check an answer against the data row's gold columns.

Point `--reward_function` of PPO, RLOO, GRPO, evaluate.py or rejection_sampling.py at one of them, e.g.
`--reward_function rlhfkit.verifiers:exact_number`. Each has TRL's signature, gets the row's other columns as keyword
arguments (one list per column, one entry per answer) and returns one float per answer, 1.0 right and 0.0 wrong:

    exact_number  column `answer` (a number): the last number in the answer equals it (arithmetic, GSM8K-style)
    math_answer   column `answer` (text or LaTeX): Hugging Face's `math-verify` finds the two equivalent
    ifeval        columns `instruction_id_list`, `kwargs` (IFEval rows): the share of the prompt's instructions the
                  answer follows, strict (Zhou et al. 2023, arXiv:2311.07911), with the checkers shipped in
                  `lm-eval` (`pip install 'lm-eval[ifeval]==0.4.13'`); 1.0 when all are followed (prompt-level accuracy)

Each names the columns it needs in `gold_columns` and checks their values in `check_gold(rows)` (a number for
`exact_number`, known instruction ids and one `kwargs` mapping per id for `ifeval`); every script runs both on every
prompt row before any weights load (`rlhfkit.reward.check_gold_columns`, which reads the same attributes on your own
functions). A missing column at
scoring time raises `ValueError` naming it: a verifier never scores without its gold answer. evaluate.py reports a
function whose scores all lie in [0, 1] as an accuracy (share of answers scored 1.0).
"""

from __future__ import annotations

import re

from rlhfkit.errors import ConfigError, shorten

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


def gold_number(value) -> float | None:
    """A gold `answer` as a number: a number, or numeric text (`"1,024"`; GSM8K's `"... #### 57"`: the number after
    the last `####`); None for anything else (a list, a dict, text that is not a number, a boolean).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.rsplit("####", 1)[-1].strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def bad_rows(rows: list[dict], problem) -> str | None:
    """`"N of M prompt rows ...: row I (prompt '...'): <problem>"` for the rows where `problem(row)` returns a reason,
    else None.
    """
    found = [(i, reason) for i, row in enumerate(rows) if (reason := problem(row))]
    if not found:
        return None
    i, reason = found[0]
    prompt = rows[i]["prompt"][-1]["content"] if isinstance(rows[i]["prompt"], list) else str(rows[i]["prompt"])
    prompt = prompt if len(prompt) <= 50 else prompt[:47] + "..."
    return f"{len(found)} of {len(rows)} prompt rows have gold values it cannot use; the first, row {i + 1} " \
           f"(prompt {prompt!r}): {reason}"


def check_number_rows(rows: list[dict]) -> None:
    """Raise `ValueError` naming the first row whose `answer` is not a number (`gold_number`)."""
    message = bad_rows(rows, lambda row: None if gold_number(row.get("answer")) is not None else
                       f"'answer' is {shorten(row.get('answer'))}, not a number; give the number itself, e.g. 57 or "
                       f"\"57\" (GSM8K's \"... #### 57\" is read as 57)")
    if message:
        raise ValueError(message)


def exact_number(prompts, completions, completion_ids=None, answer=None, **kwargs) -> list[float]:
    """1.0 where the last number in the answer equals the row's `answer` (`gold_number`: a number, numeric text, or
    GSM8K's `... #### N`), else 0.0.
    """
    texts = answer_texts(completions)
    golds = [gold_number(g) for g in gold(answer, "answer", "exact_number", len(texts))]
    if None in golds:
        raise ValueError(f"exact_number: the gold answer {answer[golds.index(None)]!r} is not a number")
    return [float(last_number(t) == g) for t, g in zip(texts, golds)]


exact_number.gold_columns = ("answer",)
exact_number.check_gold = check_number_rows


def check_text_rows(rows: list[dict]) -> None:
    """Raise `ValueError` naming the first row whose `answer` is not text or a number (math_answer parses it)."""
    message = bad_rows(rows, lambda row: None if isinstance(row.get("answer"), (str, int, float)) else
                       f"'answer' is {shorten(row.get('answer'))}; give it as text or LaTeX, e.g. \"1/2\"")
    if message:
        raise ValueError(message)


def math_answer(prompts, completions, completion_ids=None, answer=None, **kwargs) -> list[float]:
    r"""1.0 where `math-verify` finds the answer's final expression equivalent to the row's `answer` (text or LaTeX,
    e.g. `\\frac{1}{2}` and `0.5`), else 0.0.
    """
    from math_verify import parse, verify  # sympy underneath: slow to import

    texts = answer_texts(completions)
    golds = gold(answer, "answer", "math_answer", len(texts))
    return [float(bool(verify(parse(str(g)), parse(t)))) for t, g in zip(texts, golds)]


math_answer.gold_columns = ("answer",)
math_answer.check_gold = check_text_rows


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
                if type(error) is not LookupError:  # KeyError, IndexError: a bug, the rows were checked before
                    raise
                raise ConfigError(f"IFEval instructions {', '.join(id_list)}: a checker needs nltk's tokenizer data, "
                                  f"which is not installed: python -m nltk.downloader punkt punkt_tab (offline: "
                                  f"leave out prompts with {' or '.join(NEEDS_PUNKT)})") from error
            scores.append(sum(followed) / len(followed) if followed else 0.0)
        return scores

    ifeval.gold_columns = ("instruction_id_list", "kwargs")
    ifeval.check_gold = check_ifeval_rows
    return ifeval


def check_ifeval_rows(rows: list[dict]) -> None:
    """Raise `ValueError` naming the first IFEval row whose `instruction_id_list` holds an id lm-eval does not know,
    whose `kwargs` is not one mapping (or null) per id, or whose mapping has an argument that id's checker does not
    take. Needs lm-eval (imported by `ifeval_function`).
    """
    import inspect

    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    def problem(row):
        ids, arguments = row.get("instruction_id_list"), row.get("kwargs")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return f"'instruction_id_list' is {shorten(ids)}, not a list of instruction ids"
        unknown = [i for i in ids if i not in INSTRUCTION_DICT]
        if unknown:
            return (f"'instruction_id_list' has {unknown[0]!r}, which is not an IFEval instruction (e.g. "
                    f"{', '.join(list(INSTRUCTION_DICT)[:2])})")
        if not isinstance(arguments, list) or len(arguments) != len(ids):
            return (f"'kwargs' must be a list of one mapping per instruction id ({len(ids)}), got "
                    f"{shorten(arguments)}")
        for instruction, given in zip(ids, arguments):
            if given is not None and not isinstance(given, dict):
                return f"'kwargs' for {instruction!r} is {shorten(given)}, not a mapping"
            taken = inspect.signature(INSTRUCTION_DICT[instruction](instruction).build_description).parameters
            extra = [k for k, v in (given or {}).items() if v and k not in taken]
            if extra:
                return (f"'kwargs' for {instruction!r} has {extra[0]!r}, which its checker does not take (it takes: "
                        f"{', '.join(taken) or 'nothing'})")
        return None

    message = bad_rows(rows, problem)
    if message:
        raise ValueError(message)


def __getattr__(name: str):
    if name == "ifeval":  # built on first use, so that the other verifiers do not import lm-eval
        return ifeval_function()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
