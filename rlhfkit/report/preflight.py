"""`--check`: what a run would train on, shown before any weights load.

Every entry point calls `preflight` right after its data step when `--check` is given: the data loaders have then
already printed the detected shapes and row counts per file, the dropped and too-long rows with their reasons, and
the train/eval split. `preflight` adds one training example rendered through the chat template, token by token, with
the tokens the loss covers marked, the tokenizer's BOS / EOS / pad facts, and warnings about them. Nothing is
written: the run ends with exit status 0 and `output_dir` is not created.
"""

from __future__ import annotations

from rlhfkit.log import info_rank0

SHOWN_TOKENS = 120  # tokens of one segment printed before eliding the middle
LOSS_OPEN, LOSS_CLOSE = "[[", "]]"  # marks around the tokens the loss covers

WHAT_IS_TRAINED = {  # row kind -> which segments the loss covers, in words
    "preference": "the loss covers the chosen and rejected answers (the prompt is context)",
    "reward model": "the score is read at the last token of prompt + answer; the loss compares chosen and rejected",
    "unpaired": "the loss covers the completion (the prompt is context)",
    "sft": "the loss covers the assistant answer (the completion) only",
    "distillation": "the loss covers the answer: the teacher's and student's distributions are compared on it",
    "prompt": "nothing in the data is trained on: the policy writes the answers, which are then scored",
}


def row_kind(row: dict) -> str:
    """Which kind of canonical row this is: preference, unpaired, sft, distillation or prompt."""
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "label" in row:
        return "unpaired"
    if "completion" in row:
        return "sft"
    if "messages" in row:
        return "distillation"
    return "prompt"


def segments(row: dict, kind: str) -> tuple[list[dict], list[tuple[str, list[dict]]]]:
    """The prompt messages and the `(name, answer messages)` the loss covers, for one canonical row."""
    if kind == "preference":
        return row["prompt"], [("chosen", row["chosen"]), ("rejected", row["rejected"])]
    if kind in ("unpaired", "sft"):
        return row["prompt"], [("completion", row["completion"])]
    if kind == "distillation":
        return row["messages"][:-1], [("answer", row["messages"][-1:])]
    return row["prompt"], []


def show_tokens(tokenizer, ids: list[int]) -> str:
    r"""Token ids as their text joined by '|' (newlines shown as \\n), the middle elided past `SHOWN_TOKENS`."""
    pieces = [tokenizer.decode([i]).replace("\n", "\\n").replace("\r", "\\r") for i in ids]
    if len(pieces) > SHOWN_TOKENS:
        half = SHOWN_TOKENS // 2
        pieces = pieces[:half] + [f"... {len(pieces) - SHOWN_TOKENS} tokens ..."] + pieces[-half:]
    return "|".join(pieces)


def render(tokenizer, prompt: list[dict], answer: list[dict] | None) -> tuple[list[int], list[int]]:
    """`(prompt ids, answer ids)` as TRL splits them: the prompt rendered with the generation prompt, the answer as
    the rest of prompt + answer rendered whole (the split point is the longest common prefix of the two).
    """
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)["input_ids"]
    if answer is None:
        return prompt_ids, []
    full = tokenizer.apply_chat_template(prompt + answer, tokenize=True)["input_ids"]
    cut = 0
    while cut < min(len(full), len(prompt_ids)) and full[cut] == prompt_ids[cut]:
        cut += 1
    return full[:cut], full[cut:]


def token_name(tokenizer, token_id) -> str:
    return "none" if token_id is None else f"{tokenizer.convert_ids_to_tokens(token_id)!r} (id {token_id})"


def special_token_report(tokenizer, prompt_ids: list[int], answers: list[list[int]], kind: str,
                         trainer: str) -> tuple[list[str], list[str]]:
    """`(facts, warnings)` about BOS, EOS and pad for this tokenizer and the rendered example."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    side = getattr(tokenizer, "padding_side", "right")
    added = tokenizer("x")["input_ids"]
    adds_bos = bos is not None and bool(added) and added[0] == bos
    writes_bos = bos is not None and bool(prompt_ids) and prompt_ids[0] == bos
    facts = [f"bos {token_name(tokenizer, bos)}: the chat template writes it: {'yes' if writes_bos else 'no'}; "
             f"tokenizing text adds it: {'yes' if adds_bos else 'no'}",
             f"eos {token_name(tokenizer, eos)}; pad {token_name(tokenizer, pad)}, padding side {side}"]
    warnings = []
    if (writes_bos and adds_bos) or prompt_ids[:2] == [bos, bos]:
        warnings.append("double BOS: the chat template writes BOS and the tokenizer adds another when rendered text is "
                        "tokenized with special tokens; tokenize rendered chats with add_special_tokens=False")
    if eos is not None and any(a and eos not in a for a in answers):
        warnings.append(f"no EOS after the answer: the answer tokens do not contain eos {token_name(tokenizer, eos)}, "
                        f"so the model is not taught to stop; check the chat template or the eos token")
    if pad is not None and pad == eos and side == "right":
        ends_with_pad = any(a and a[-1] == pad for a in answers)
        if trainer == "reward model" and ends_with_pad:
            warnings.append("pad == eos with right padding: a sequence classifier reads the score at the last token "
                            "that is not pad, so these rows are scored one token before their final eos")
        else:
            facts.append("pad == eos with right padding: fine here (masks come from the attention mask"
                         + ("" if ends_with_pad else "; the answer does not end with the pad token") + ")")
    return facts, warnings


def preflight(tokenizer, train_rows: list[dict], eval_rows: list[dict], model_path: str, trainer: str,
              log=info_rank0) -> None:
    """Print the preflight report for a run about to train `trainer` (e.g. "DPO", "reward model") on `train_rows`.

    Shows the split sizes, the first training row rendered through the chat template with token boundaries and the
    tokens the loss covers between `[[` and `]]`, BOS / EOS / pad facts and warnings (double BOS, no EOS after the
    answer, pad == eos with right padding where the trainer reads the last non-pad token). Returns None; raises
    nothing of its own.
    """
    kind = row_kind(train_rows[0])
    log(f"[check] {trainer}: {len(train_rows)} training rows, {len(eval_rows)} eval rows; tokenizer of {model_path}")
    prompt, answers = segments(train_rows[0], kind)
    rendered = [render(tokenizer, prompt, answer) for _, answer in answers] or [render(tokenizer, prompt, None)]
    prompt_ids = rendered[0][0]
    trained = WHAT_IS_TRAINED["reward model" if trainer == "reward model" else kind]
    marks = f"; {LOSS_OPEN} {LOSS_CLOSE} mark the trained tokens" if answers else ""
    log(f"[check] example: training row 1 through the chat template, tokens separated by '|'; {trained}{marks}:")
    log(f"  prompt ({len(prompt_ids)} tokens): {show_tokens(tokenizer, prompt_ids)}")
    for (name, _), (_, answer_ids) in zip(answers, rendered):
        shown = f"{LOSS_OPEN}{show_tokens(tokenizer, answer_ids)}{LOSS_CLOSE}"
        log(f"  {name} ({len(answer_ids)} tokens, trained): {shown}")
    facts, warnings = special_token_report(tokenizer, prompt_ids, [ids for _, ids in rendered if ids], kind, trainer)
    for fact in facts:
        log(f"[check] {fact}")
    for warning in warnings:
        log(f"[check] WARNING: {warning}")
    log(f"[check] done: {len(warnings)} warning(s); no weights were loaded, nothing was trained or written")
