"""Prompt strings and wrapping for evaluation (docs/prefixlm_packing.md §1, docs/eval_protocol.md §1–9).

Everything here is pure string manipulation so that `eval.py --dump_prompts` can show, byte for byte, what the
model receives. The reference builds a prompt string per benchmark, strips it, and wraps it as
`BOQ + condition token(s) + prompt + EOQ` (docs/eval_protocol.md §1). Token ids are built the same way, with the
structural ids inserted directly and only the stripped prompt text going through `tokenizer.encode`
(docs/prefixlm_packing.md §1: special-token strings inside text are never parsed).
"""

from __future__ import annotations

from typing import Any, Sequence

# The structural token strings and condition parsing live with the tokenizers (one definition).
from hrm.data.tokenizer import BOQ, CONDITION_TOKENS, EOA, EOQ, split_condition  # noqa: F401


def wrap_prompt(prompt: str, condition: str) -> str:
    """The exact text the model sees: `<|im_start|>` + condition tokens + stripped prompt + `<|im_end|>`.

    docs/eval_protocol.md §1 (prompt wrapping), docs/prefixlm_packing.md §1 (condition tokens, composite order).
    """
    tokens = "".join(CONDITION_TOKENS[c] for c in split_condition(condition))
    return f"{BOQ}{tokens}{prompt.strip()}{EOQ}"


def prompt_ids(tokenizer: Any, prompt: str, condition: str) -> list[int]:
    """Token ids of a wrapped prompt: [boq] + condition ids + encode(stripped prompt) + [eoq] (docs/prefixlm_packing.md
    §1, docs/eval_protocol.md §1).

    `tokenizer.special` must expose int `boq`, `eoq` and a dict `conditions` name -> id.
    """
    special = tokenizer.special
    cond = [special.conditions[c] for c in split_condition(condition)]
    return [special.boq, *cond, *tokenizer.encode(prompt.strip()), special.eoq]


def capitalize(text: str) -> str:
    """Python `str.capitalize` (first character upper, the rest lower), as the reference uses (docs/eval_protocol.md
    §4, §6)."""
    return text.capitalize()


def letters(num_choices: int) -> list[str]:
    """Answer letters A, B, C, ... assigned by position (docs/eval_protocol.md §1 MCQ layout; dataset labels are not
    used)."""
    return [chr(ord("A") + i) for i in range(num_choices)]


def mcq_block(query: str, choices: Sequence[str], answer: str | None = None) -> str:
    """One MCQ block: stripped query, one `<L>. <choice stripped>` line per choice, then `Answer:`.

    A shot passes its gold letter as `answer` ("Answer: B"); the target block ends with the bare "Answer:".
    docs/eval_protocol.md §1. For ARC in the faithful variant a shot's "letter" can be a digit (docs/eval_protocol.md
    §3).
    """
    lines = [query.strip()]
    lines += [f"{letter}. {str(choice).strip()}" for letter, choice in zip(letters(len(choices)), choices)]
    lines.append("Answer:" if answer is None else f"Answer: {answer}")
    return "\n".join(lines)


def mcq_prompt(shots: Sequence[tuple[str, Sequence[str], str]], query: str, choices: Sequence[str]) -> str:
    """Few-shot MCQ prompt: shots (query, choices, gold letter) joined by a blank line, then the target block.

    docs/eval_protocol.md §1: no header or instruction line; shots are separated by "\\n\\n".
    """
    parts = [mcq_block(q, c, a) for q, c, a in shots]
    parts.append(mcq_block(query, choices))
    return "\n\n".join(parts).strip()


def hellaswag_query(ctx_a: str, ctx_b: str) -> str:
    """HellaSwag query (docs/eval_protocol.md §4): ctx_a + " " + capitalize(ctx_b) + "\\nQuestion: Which is the most
    logical continuation?"."""
    return f"{ctx_a} {capitalize(ctx_b)}\nQuestion: Which is the most logical continuation?"


def boolq_query(passage: str, question: str) -> str:
    """BoolQ query: passage + "\\nQuestion: " + capitalize(question) + "?" (docs/eval_protocol.md §6)."""
    return f"{passage}\nQuestion: {capitalize(question)}?"


BOOLQ_CHOICES = ("Yes", "No")

# DROP: 3 fixed shots hard-coded in ref evaluation/benchmarks.py (`DROP.EXAMPLES`), docs/eval_protocol.md §7. Each is
# (passage, question, answer); a shot renders as passage + "\nQ: " + question + "\nA: " + answer. The strings,
# including the missing final period of the first passage and the "Navarrase" misspelling, are copied exactly from
# two independent public copies of that file (see the DROP notes in the eval report); they are not from the dataset.
DROP_SHOTS: tuple[tuple[str, str, str], ...] = (
    (
        "To start the season, the Lions traveled south to Tampa, Florida to take on the Tampa Bay Buccaneers. "
        "The Lions scored first in the first quarter with a 23-yard field goal by Jason Hanson. The Buccaneers tied "
        "it up with a 38-yard field goal by Connor Barth, then took the lead when Aqib Talib intercepted a pass from "
        "Matthew Stafford and ran it in 28 yards. The Lions responded with a 28-yard field goal. In the second "
        "quarter, Detroit took the lead with a 36-yard touchdown catch by Calvin Johnson, and later added more points "
        "when Tony Scheffler caught an 11-yard TD pass. Tampa Bay responded with a 31-yard field goal just before "
        "halftime. The second half was relatively quiet, with each team only scoring one touchdown. First, Detroit's "
        "Calvin Johnson caught a 1-yard pass in the third quarter. The game's final points came when Mike Williams of "
        "Tampa Bay caught a 5-yard pass. The Lions won their regular season opener for the first time since 2007",
        "How many points did the buccaneers need to tie in the first?",
        "3",
    ),
    (
        "Trying to snap a two-game skid, the Bills flew to Gillette Stadium for a Week 3 divisional fight with the "
        "New England Patriots. In the first quarter, QB J. P. Losman was immediately injured on the first offensive "
        "play of the game. He would finish the series, but ended up on the bench for the rest of the game. After New "
        "England took the lead with kicker Stephen Gostkowski's 24-yard field goal, rookie QB Trent Edwards played the "
        "rest of the game for Buffalo. The Bills would get their only score of the game as RB Marshawn Lynch got an "
        "8-yard TD run, and a Rian Lindell extra point put the Bills ahead surprisingly 7-3. However, in the second "
        "quarter, the Patriots were able to open up their running game when Bills rookie standout Paul Posluszny was "
        "lost due to a broken arm. This left passing lanes open, and for the rest of the game, the Patriots "
        "dominated. QB Tom Brady's 8-yard TD pass to TE Benjamin Watson and a 3-yard TD pass to WR Randy Moss made it "
        "17-7 at the half. In the third quarter, New England continued its conquest with Brady's 4-yard TD pass to WR "
        "Jabar Gaffney and RB Sammy Morris' 4-yard TD run. In the fourth quarter, the Patriots ended the day with "
        "Brady and Moss hooking up with each other again on a 45-yard TD pass.",
        "How many games had the Bills won before this game?",
        "0",
    ),
    (
        "The French king, John II, had been held captive in England. The Treaty of Br\u00e9tigny set his ransom at 3 "
        "million crowns and allowed for hostages to be held in lieu of John. The hostages included two of his sons, "
        "several princes and nobles, four inhabitants of Paris, and two citizens from each of the nineteen principal "
        "towns of France. While these hostages were held, John returned to France to try and raise funds to pay the "
        "ransom. In 1362 John's son Louis of Anjou, a hostage in English-held Calais, escaped captivity. So, with his "
        "stand-in hostage gone, John felt honor-bound to return to captivity in England. The French crown had been at "
        "odds with Navarre since 1354, and in 1363 the Navarrese used the captivity of John II in London and the "
        "political weakness of the Dauphin to try to seize power. Although there was no formal treaty, Edward III "
        "supported the Navarrese moves, particularly as there was a prospect that he might gain control over the "
        "northern and western provinces as a consequence. With this in mind, Edward deliberately slowed the peace "
        "negotiations. In 1364, John II died in London, while still in honourable captivity. Charles V succeeded him "
        "as king of France. On 7 May 1364, one month after the dauphin's accession and three days before his "
        "coronation as Charles V, the Navarrese suffered a crushing defeat at the Battle of Cocherel.",
        "How many years before Navarrase used the captivity of John II?",
        "9",
    ),
)


def drop_block(passage: str, question: str, answer: str | None = None) -> str:
    """DROP block: passage + "\\nQ: " + question + "\\nA:" (+ " " + answer for a shot). docs/eval_protocol.md §7."""
    block = f"{passage}\nQ: {question}\nA:"
    return block if answer is None else f"{block} {answer}"


def drop_prompt(passage: str, question: str, num_shots: int = 3) -> str:
    """The 3 fixed shots, each followed by a blank line, then the target block (docs/eval_protocol.md §7)."""
    prefix = "".join(drop_block(*shot) + "\n\n" for shot in DROP_SHOTS[:num_shots])
    return (prefix + drop_block(passage, question)).strip()
