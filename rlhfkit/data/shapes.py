"""The table of accepted row shapes: how each is detected and how it converts for each kind of data.

A row is converted for one *target*, the kind of rows a method trains on:

    preference    {"prompt": [messages], "chosen": [answer], "rejected": [answer]}    reward model, DPO, CPO, ...
    unpaired      {"prompt": [messages], "completion": [answer], "label": bool}       KTO
    sft           {"prompt": [messages], "completion": [answer]}                      SFT
    prompt        [messages] ending with a user turn                                  PPO, RLOO, GRPO, sampling
    distillation  {"prompt": [messages], "answer": [answer] | None}                   GKD

`SHAPES` holds one `Shape` per accepted shape; `ORDER` says, per target, which shapes are tried in which order (the
first whose `detect` matches converts the row). A preference shape also serves the other targets: SFT trains
prompt + chosen, KTO gets chosen as desirable and rejected as undesirable, prompt sources take the prompt.
`convert_row` is the one entry point; `shape_notes` gives the notes of the shapes a file held. A row with a `prompt`
field is read for the prompt target by rlhfkit/data/prompts.py itself, which imports this table for other rows only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from rlhfkit.data import chats, pairs
from rlhfkit.data.messages import RowError, as_answer, as_prompt, check_messages

TARGETS = ("preference", "unpaired", "sft", "prompt", "distillation")


@dataclass(frozen=True)
class ShapeOptions:
    """The settings that change how rows convert (flags of the same names)."""

    preference_key: str = "better_response_id"  # PKU-SafeRLHF: better_response_id or safer_response_id
    pairs: str = "best_worst"  # ranked responses: best_worst or all
    assistant_turns: str = "all"  # SFT conversations: all or last
    prompt_turns: str = "last"  # prompt sources: last or all
    number_labels: bool = False  # KTO: labels are 0/1 (set per file, see `chats.uses_number_labels`)


def options_from(*settings) -> ShapeOptions:
    """`ShapeOptions` from the fields of the same names on any of `settings` (the first that has one wins)."""
    values = {}
    for name in ("preference_key", "pairs", "assistant_turns", "prompt_turns"):
        for obj in settings:
            if getattr(obj, name, None) is not None:
                values[name] = getattr(obj, name)
                break
    return ShapeOptions(**values)


Converter = Callable[[dict, ShapeOptions], tuple[str, list]]  # (row, options) -> (shape name, rows)


@dataclass(frozen=True)
class Shape:
    """One accepted row shape. A converter returns `(shape name, rows)`: one input row may give several rows."""

    name: str
    detect: Callable[[dict], bool]
    fields: tuple[str, ...]  # the fields of a row it reads; a row's other fields are data columns (a gold `answer`)
    fields_beside: tuple[str, ...] = ()  # fields it reads only beside its first field; alone they are data columns
    preference: Converter | None = None  # -> pairs; a preference shape also serves sft, unpaired and prompt
    unpaired: Converter | None = None
    sft: Converter | None = None
    prompt: Converter | None = None
    distillation: Converter | None = None
    note: str = ""  # printed once per file that has rows of this shape


def named(name: str, function: Callable[[dict], list]) -> Converter:
    """A converter that ignores the options and reports `name`."""
    return lambda row, options: (name, function(row))


def pku(row: dict, options: ShapeOptions) -> tuple[str, list]:
    key, out = pairs.from_pku(row, options.preference_key)
    return f"PKU-SafeRLHF ({key})", out


def explicit_sft(row: dict, options: ShapeOptions) -> tuple[str, list]:
    """SFT from an explicit-prompt pair: prompt + chosen; `rejected` may be missing."""
    name = "plain strings" if isinstance(row.get("prompt"), str) and isinstance(row.get("chosen"), str) else \
        "conversational"
    if "chosen" not in row:
        raise RowError(*FALLBACK["sft"])
    if "rejected" in row:
        pair = pairs.from_explicit(row)[0]
        return name, [{"prompt": pair["prompt"], "completion": pair["chosen"]}]
    if "prompt" not in row:
        raise RowError("prompt", "missing field")
    return name, [{"prompt": as_prompt(row["prompt"]), "completion": as_answer(row["chosen"], "chosen")}]


def chat_shape(name: str, conversation: Callable[[dict], list[dict]], field: str, fields: tuple[str, ...],
               fields_beside: tuple[str, ...] = (), note: str = "",
               detect: Callable[[dict], bool] | None = None) -> Shape:
    """A shape whose rows are one conversation (`conversation(row) -> messages`), for SFT, prompts and GKD."""
    def sft(row, options):
        return name, chats.sft_rows(conversation(row), field, options.assistant_turns)

    def prompt(row, options):
        return name, chats.conversation_prompts(conversation(row), field, options.prompt_turns)

    def distillation(row, options):
        messages = conversation(row)
        given = row.get("prompt") if name == "messages" else None
        shape = "messages + prompt" if name == "messages" and isinstance(given, list) else name
        if messages[-1]["role"] != "assistant" and name != "messages":
            return shape, [{"prompt": chats.conversation_prompts(messages, field)[0], "answer": None}]
        return shape, [chats.distillation_row(messages, field, given)]

    return Shape(name, detect or (lambda row: field in row), fields, fields_beside, sft=sft, prompt=prompt,
                 distillation=distillation, note=note)


def alpaca_sft(row: dict, options: ShapeOptions) -> tuple[str, list]:
    if row.get("output") is None:
        raise RowError("output", "missing field (an alpaca SFT row needs instruction and output)")
    return "alpaca", chats.sft_rows(chats.alpaca_conversation(row), "messages", options.assistant_turns)


PAIR_FIELDS = ("prompt", "chosen", "rejected")
SHAPES = (
    Shape("PKU-SafeRLHF", pairs.is_pku, ("response_0", "response_1", "prompt"),
          ("better_response_id", "safer_response_id"), preference=pku,
          note="PKU-SafeRLHF rows: response_{id} -> chosen, the other -> rejected "
               "(--preference_key picks better_response_id or safer_response_id)"),
    Shape("ranked responses", pairs.is_ranked, ("responses", "prompt"), ("scores",),
          preference=lambda row, o: ("ranked responses", pairs.from_ranked(row, o.pairs)),
          note="ranked responses -> pairs (--pairs best_worst: best vs worst; all: every pair with different scores)"),
    Shape("hh-rlhf", pairs.is_hh, PAIR_FIELDS, preference=named("hh-rlhf", pairs.from_hh),
          note="raw hh-rlhf transcripts were split: shared turns -> prompt, last assistant turn -> answer"),
    Shape("implicit prompt", pairs.is_implicit, PAIR_FIELDS, preference=named("implicit prompt", pairs.from_implicit),
          note="whole chosen/rejected conversations were split: shared turns -> prompt, last assistant turn -> answer"),
    Shape("plain strings", lambda row: isinstance(row.get("prompt"), str) and isinstance(row.get("chosen"), str),
          PAIR_FIELDS, preference=named("plain strings", pairs.from_explicit), sft=explicit_sft,
          note="plain-string prompts became one user turn"),
    Shape("conversational", lambda row: "chosen" in row or "rejected" in row, PAIR_FIELDS,
          preference=named("conversational", pairs.from_explicit), sft=explicit_sft),
    Shape("unpaired", lambda row: "completion" in row or "label" in row, ("completion", "prompt"), ("label",),
          unpaired=lambda row, o: ("unpaired (0/1 labels)" if o.number_labels else "unpaired",
                                   chats.from_unpaired(row, o.number_labels))),
    chat_shape("messages", lambda row: check_messages(row["messages"], "messages"), "messages", ("messages", "prompt")),
    chat_shape("ShareGPT", chats.sharegpt_conversation, "conversations", ("conversations", "system"),
               note="ShareGPT conversations: human -> user, gpt -> assistant"),
    replace(chat_shape("alpaca", chats.alpaca_conversation, "messages", ("instruction", "system"),
                       ("input", "output", "history"),
                       note="alpaca rows: instruction (+ input) -> user turn, output -> answer",
                       detect=lambda row: "instruction" in row), sft=alpaca_sft),
    Shape("prompt/completion", lambda row: "completion" in row, ("completion", "prompt"),
          sft=named("prompt/completion", chats.from_prompt_completion)),
    Shape("prompt-only", lambda row: "prompt" in row, ("prompt",),
          distillation=lambda row, o: ("prompt-only", [{"prompt": as_prompt(row["prompt"]), "answer": None}])),
)
SHAPE = {shape.name: shape for shape in SHAPES}


def shape_fields(row: dict) -> set[str]:
    """The fields of `row` that some shape reads (`Shape.fields`, and `fields_beside` where the row has that shape's
    first field: a KTO row's `label` beside its `completion`, not a gold `label` beside a `prompt`). Every other field
    is a data column: the online methods pass it to the reward functions.
    """
    return {f for shape in SHAPES for f in shape.fields + (shape.fields_beside if shape.fields[0] in row else ())
            if f in row}

PREFERENCE = ("PKU-SafeRLHF", "ranked responses", "hh-rlhf", "implicit prompt", "plain strings", "conversational")
ORDER = {
    "preference": PREFERENCE,
    "unpaired": ("unpaired",) + PREFERENCE,
    "sft": ("messages", "ShareGPT", "alpaca", "prompt/completion") + PREFERENCE,
    "prompt": ("messages", "ShareGPT", "alpaca", "hh-rlhf", "implicit prompt"),  # rows with `prompt`: data/prompts.py
    "distillation": ("messages", "ShareGPT", "alpaca", "prompt-only"),
}
FALLBACK = {  # (field, message) of the error for a row that no shape of the target matches
    "preference": ("chosen", "missing field"),
    "unpaired": ("completion", "missing field: a KTO row needs prompt, completion and label (true = desirable), or "
                               "is a preference pair (prompt, chosen, rejected)"),
    "sft": ("messages", "missing field: an SFT row needs 'messages' (a conversation ending with an assistant turn), "
                        "or 'prompt' + 'completion', or 'prompt' + 'chosen'"),
    "prompt": ("prompt", "missing field: a row needs 'prompt', 'messages' or raw hh-rlhf transcripts"),
    "distillation": ("messages", "missing field: a row needs 'messages' (a chat ending with the answer) or 'prompt' "
                                 "(prompt only)"),
}


def from_pairs(target: str, pair_rows: list[dict]) -> list:
    """Preference pairs as rows of another target (see the module docstring)."""
    if target == "sft":
        return [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pair_rows[:1]]
    if target == "unpaired":
        return [{"prompt": p["prompt"], "completion": p[answer], "label": label}
                for p in pair_rows for answer, label in (("chosen", True), ("rejected", False))]
    if target == "prompt":
        return [p["prompt"] for p in pair_rows[:1]]
    raise ValueError(f"no conversion of pairs to {target}")


def convert_row(row: dict, target: str, options: ShapeOptions = ShapeOptions()) -> tuple[str, list]:
    """Check one row and convert it for `target` (one of `TARGETS`) with the first matching shape of `ORDER[target]`.

    Returns `(shape name, rows)`. Raises `RowError` naming the field at fault, or the target's `FALLBACK` error if no
    shape matches. A preference shape serving another target converts with `pairs="best_worst"`.
    """
    for name in ORDER[target]:
        shape = SHAPE[name]
        if not shape.detect(row):
            continue
        own = getattr(shape, target)
        if own is not None:
            return own(row, options)
        if shape.preference is not None:
            shape_name, pair_rows = shape.preference(row, replace(options, pairs="best_worst"))
            return shape_name, from_pairs(target, pair_rows)
    raise RowError(*FALLBACK[target])


def is_preference_shape(name: str) -> bool:
    """True if `name` (as `convert_row` reports it) is one of the preference shapes."""
    return name.split(" (")[0] in PREFERENCE


def shape_notes(names, extra: dict[str, str] | None = None) -> list[str]:
    """The `note` of each shape among `names` (reported shape names), in table order, once each, then the `extra` notes
    of the shapes seen (keyed by a shape name, or by "pair" for any preference shape).
    """
    seen = {name.split(" (")[0] for name in names}
    said = [shape.note for shape in SHAPES if shape.name in seen and shape.note]
    return said + [note for key, note in (extra or {}).items()
                   if key in names or (key == "pair" and any(is_preference_shape(s) for s in names))]


# ----------------------------------------------------------------------------------------------------------
# The preference shape of a row, by name


def detect_preference_format(row: dict) -> str:
    """Name the preference shape of one row ("conversational", "plain strings", "hh-rlhf", "implicit prompt",
    "PKU-SafeRLHF", "ranked responses"), or "unknown".
    """
    return next((name for name in PREFERENCE if SHAPE[name].detect(row)), "unknown")
