"""What goes into a generator and what is kept of what comes out: prompt templates, chat rendering, query clean-up.

Shared by every backend, so a query sampled by torch or by CTranslate2 is cleaned, deduplicated
and filtered the same way.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from genq.quality import strip_template_echo

if TYPE_CHECKING:
    from genq.generation.settings import GenerationConfig

def render_prompt(template: str, passage: str, title: str = "") -> str:
    # str.replace, not str.format: user templates may hold other braces (JSON examples).
    return template.replace("{title}", title).replace("{passage}", passage)


# "Label: text" over one or more lines, then "Slot: answer" on the last line
_SHOT = re.compile(r"^(?P<input>[^\n:]{1,40}:.*)\n(?P<slot>[^\n:]{1,40}):[ \t]*(?P<answer>[^\n]*)$", re.DOTALL)


def few_shot_parts(template: str) -> tuple[str, list[tuple[str, str]], str] | None:
    """(instruction, [(example input, its query), ...], final input) of a plain few-shot template.

    The layout of the built-in templates: an optional instruction paragraph, then blocks of
    "Document: ..." + "Query: ...", the last one ending in an empty slot after
    "Document: {passage}". Any other layout gives None.
    """
    blocks = [block.strip() for block in re.split(r"\n[ \t]*\n", template.strip()) if block.strip()]
    instruction: list[str] = []
    shots: list[re.Match] = []
    for block in blocks:
        match = _SHOT.match(block)
        if match is None:
            if shots:
                return None  # prose after the examples: not this layout
            instruction.append(block)
        else:
            shots.append(match)
    if not shots or shots[-1]["answer"].strip() or "{passage}" not in shots[-1]["input"]:
        return None
    examples = [(shot["input"].strip(), shot["answer"].strip()) for shot in shots[:-1]]
    return " ".join(instruction), examples, shots[-1]["input"].strip()


def chat_prompt(tokenizer, template: str) -> str:
    """``template`` as a conversation in the tokenizer's chat format, still with its ``{passage}`` slot.

    Instruct models answer a user turn far better than they continue a document: the
    instruction becomes the system turn, each example a user turn (the passage) answered by an
    assistant turn (its query), and the prompt ends where the assistant's answer starts. A
    template of another layout becomes one user turn.
    """
    parts = few_shot_parts(template)
    if parts is None:
        system, turns = None, [{"role": "user", "content": template}]
    else:
        instruction, examples, final = parts
        system = f"{instruction} Reply with the query only, on one line.".strip()
        turns = []
        for text, query in examples:
            turns += [{"role": "user", "content": text}, {"role": "assistant", "content": query}]
        turns.append({"role": "user", "content": final})
    try:
        messages = ([{"role": "system", "content": system}] if system else []) + turns
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # some chat formats have no system turn: the instruction opens the first user turn
        turns[0] = {"role": "user", "content": f"{system}\n\n{turns[0]['content']}" if system else turns[0]["content"]}
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


# --------------------------------------------------------------------------- query clean-up


_SPACES = re.compile(r"\s+")
_PUNCT_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def normalize_query(query: str) -> str:
    """The dedup key: lowercase, whitespace collapsed, surrounding punctuation stripped."""
    return _PUNCT_EDGES.sub("", _SPACES.sub(" ", query.lower()).strip())


def clean_queries(queries: list, passage: str, config: GenerationConfig) -> tuple[list, int, int]:
    """Dedup (case/space-insensitive) and filter one passage's queries; returns kept, duplicates, filtered.

    A query may come as ``(text, score)``; it is kept as such (the text cleaned).
    """
    kept: list = []
    seen: set[str] = set()
    duplicates = filtered = 0
    passage_key = normalize_query(passage) if config.drop_copies else ""
    for item in queries:
        query, score = item if isinstance(item, tuple) else (item, None)
        query = _SPACES.sub(" ", query).strip()
        key = normalize_query(query)
        if not key:
            filtered += 1
            continue
        if key in seen:
            duplicates += 1
            continue
        words = len(query.split())
        if (config.min_query_words and words < config.min_query_words) or (
            config.max_query_words and words > config.max_query_words
        ) or (config.drop_copies and key in passage_key):
            filtered += 1
            continue
        seen.add(key)
        kept.append(query if score is None else (query, score))
    return kept, duplicates, filtered


def newline_token_ids(tokenizer) -> list[int]:
    """Vocabulary entries that decode to something containing a newline."""
    ids = []
    for token, index in tokenizer.get_vocab().items():
        if "\n" in tokenizer.convert_tokens_to_string([token]):
            ids.append(index)
    return sorted(ids)[:64]


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip().strip('"').strip()
        if line:
            return line
    return ""


def query_in_sample(text: str, ended: bool, example_queries: set[str], emptied: dict[str, int]) -> str:
    """The query in a decoder-only sample, or "" (counted in ``emptied`` by reason) when it holds none.

    A sample cut by --max-query-tokens is a runaway sentence (small models often summarise
    the passage instead of asking about it); one that writes a "Document:" or an "Answer:",
    or repeats a few-shot example's query, is the prompt talking, not the passage.
    """
    if not ended:
        emptied["runaway"] += 1
        return ""
    first = first_line(text)
    query = strip_template_echo(first)
    if first and (not query or normalize_query(query) in example_queries):
        emptied["not_a_query"] += 1
        return ""
    return query
