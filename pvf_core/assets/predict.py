#!/usr/bin/env python3
"""Label a CSV with a model and prompt exported by PvF Studio. Needs only torch, transformers and peft.

    python predict.py [--base-model DIR] INPUT.csv OUTPUT.csv

Writes INPUT's rows to OUTPUT with a ``prediction`` column (and, for labels, one ``p_<label>`` column
each: how sure the model is). Without ``--base-model`` the base model is loaded by its hub id (in
``prompt.json``, ``base_model``); give a local copy of that model with ``--base-model``.

It does what PvF Studio did when it scored this arm, row by row:
* the prompt: ``prompt.json`` holds the system message, the examples (or, for "similar" examples, the
  training rows they are picked from by TF-IDF word overlap) and the model's chat template;
* labels: each label's answer tokens (its word + the end-of-turn token) are scored after the prompt,
  as the mean log-probability per token; the calibration in ``calibration.json`` is then applied to each
  row on its own: probabilities = softmax(log_softmax(scores) - log_bias), and the likeliest label wins;
* text-to-text: greedy generation, stopping at the end of turn, the row's token limit or (if set) the
  first line break;
* the adapter (``adapter_model.safetensors`` next to this file, if there is one) is merged into the
  base model, in the data type PvF Studio used (``dtype`` in ``prompt.json``; ``--dtype`` changes it).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


# -- reading and writing ------------------------------------------------------------------------------------

def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    try:
        dialect = csv.Sniffer().sniff(text[:20000], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(keepends=True), dialect=dialect)
    rows = [dict(row) for row in reader]
    return list(reader.fieldnames or []), rows


def text_column(columns: list[str], wanted: str | None, recorded: str | None) -> str:
    if wanted:
        if wanted not in columns:
            sys.exit(f"Error: INPUT has no column '{wanted}' (it has {', '.join(columns)}).")
        return wanted
    for name in (recorded, "text", "input"):
        if name and name in columns:
            return name
    if not columns:
        sys.exit("Error: INPUT has no columns.")
    return columns[0]


# -- the prompt ---------------------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """A text reduced to lower-case letters and digits: how PvF Studio tells that two texts are the same."""
    return re.sub(r"[^0-9a-z]+", " ", str(text).lower()).strip()


def messages_for(prompt: dict, text: str, examples: list[list[str]]) -> list[dict[str, str]]:
    """System message, the examples, then the row (PvF Studio's prompting.build_messages)."""
    words = prompt["words"]
    messages = [{"role": "system", "content": prompt["system"]}]
    if prompt["example_style"] == "conversation":
        for ex_text, ex_label in examples:
            messages += [{"role": "user", "content": ex_text},
                         {"role": "assistant", "content": words.get(ex_label) or ex_label}]
        messages.append({"role": "user", "content": text})
    else:
        blocks = [f"Text: {t}\nAnswer: {words.get(label) or label}" for t, label in examples]
        content = ("Examples:\n\n" + "\n\n".join(blocks) + "\n\nText: " + text) if blocks else text
        messages.append({"role": "user", "content": content})
    return messages


class Prompter:
    """Token ids of one row's prompt: head + the row's tokens (cut to fit) + tail."""

    def __init__(self, prompt: dict, tokenizer) -> None:
        self.prompt, self.tokenizer = prompt, tokenizer
        self.frames: dict = {}
        self.similar = Similar(prompt["examples"]["pool"]) if prompt["examples"]["selection"] == "similar" else None

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def examples(self, text: str) -> list[list[str]]:
        """The row's examples: its nearest pool rows ('similar'), else the fixed ones with any whose text is
        the row's own swapped for the next spare row (same label first)."""
        found, own = self.prompt["examples"], normalise(text)
        if self.similar is not None:
            return [found["pool"][i] for i in self.similar.nearest(text, found["k"], own)]
        items = found["items"]
        if found["selection"] not in ("random", "balanced") or all(normalise(t) != own for t, _ in items):
            return items
        spare, taken, chosen = found.get("spare", []), set(), []
        for t, label in items:
            if normalise(t) != own:
                chosen.append([t, label])
                continue
            fits = [j for j, (s_text, _) in enumerate(spare) if j not in taken and normalise(s_text) != own]
            swap = next((j for j in fits if spare[j][1] == label), fits[0] if fits else None)
            if swap is not None:
                chosen.append(spare[swap])
                taken.add(swap)
        return chosen

    def ids(self, text: str) -> tuple[list[int], list[int]]:
        """(head, rest): the ids before the row (shared by rows with the same examples), then the row's."""
        examples = self.examples(text)
        key = tuple(map(tuple, examples))
        if key not in self.frames:
            placeholder = self.prompt["row_placeholder"]
            rendered = self.tokenizer.apply_chat_template(messages_for(self.prompt, placeholder, examples),
                                                          tokenize=False, add_generation_prompt=True)
            head, tail = rendered.split(placeholder)
            self.frames[key] = (self.encode(head), self.encode(tail))
        head, tail = self.frames[key]
        body = self.encode(text)
        room = self.prompt["max_prompt_tokens"]
        if len(head) + len(body) + len(tail) > room:
            body = body[:max(0, room - len(head) - len(tail))]
        return head, body + tail


class Similar:
    """The pool rows most similar to a text: TF-IDF over words and word pairs, as PvF Studio picks them
    (scikit-learn's TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), written out here)."""

    TOKEN = re.compile(r"(?u)\b\w\w+\b")

    def __init__(self, pool: list[list[str]]) -> None:
        self.keys = [normalise(text) for text, _ in pool]
        docs = [self.terms(text) for text, _ in pool]
        counts = Counter(term for doc in docs for term in set(doc))
        self.vocabulary = {term: i for i, term in enumerate(sorted(counts))}
        n = len(docs)
        self.idf = {term: math.log((1 + n) / (1 + df)) + 1.0 for term, df in counts.items()}
        self.vectors = [self.vector(doc) for doc in docs]

    def terms(self, text: str) -> list[str]:
        words = self.TOKEN.findall(str(text).lower())
        return words + [" ".join(pair) for pair in zip(words, words[1:])]

    def vector(self, terms: list[str]) -> dict[str, float]:
        counts = Counter(t for t in terms if t in self.idf)
        weights = {t: (math.log(c) + 1.0) * self.idf[t] for t, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {t: w / norm for t, w in weights.items()} if norm else {}

    def nearest(self, text: str, k: int, own: str) -> list[int]:
        query = self.vector(self.terms(text))
        order = sorted(query, key=self.vocabulary.get)
        scores = [sum(query[t] * v[t] for t in order if t in v) for v in self.vectors]
        ranked = [i for i in sorted(range(len(scores)), key=lambda i: -scores[i]) if self.keys[i] != own]
        return ranked[:k][::-1]  # most similar last, nearest the question


# -- the model ----------------------------------------------------------------------------------------------

def load(base: str, dtype_name: str, device: str):
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    tokenizer = AutoTokenizer.from_pretrained(base)
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kind = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, **{kind: dtype})
    if (HERE / "adapter_model.safetensors").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(HERE)).merge_and_unload()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def cache_argument(model, cache) -> dict:
    """The key/value cache as this transformers version takes it (``cache`` from 5.x, else ``past_key_values``)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache} if cache is not None else {}


def cache_of(out):
    found = getattr(out, "cache", None)
    return found if found is not None else out.past_key_values


class LabelScorer:
    """Mean log-probability per token of each answer after each row's prompt, rows in batches.

    The prompt's head (system message and examples), the same for every row that shows the same
    examples, is computed once and its key/value cache kept; each batch then runs only its rows' own
    tokens, one sequence per (row, answer): the row's tokens, then the answer's tokens but the last.
    """

    def __init__(self, model, answers: list[list[int]], pad_id: int, device: str) -> None:
        self.model, self.answers, self.pad_id, self.device = model, answers, pad_id, device
        self.head: list[int] | None = None
        self.head_cache = None

    def _head_cache(self, head: list[int]):
        if head != self.head:
            self.head, self.head_cache = list(head), None
            if head:
                out = self.model(input_ids=torch.tensor([head], device=self.device), use_cache=True)
                self.head_cache = cache_of(out)
        return copy.deepcopy(self.head_cache) if self.head_cache is not None else None

    def __call__(self, head: list[int], rests: list[list[int]]) -> torch.Tensor:
        pairs = [(rest, answer) for rest in rests for answer in self.answers]
        sequences = [rest + answer[:-1] for rest, answer in pairs]
        width, count, start = max(len(x) for x in sequences), len(sequences), len(head)
        ids = torch.full((count, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((count, start + width), dtype=torch.long)
        mask[:, :start] = 1
        for i, sequence in enumerate(sequences):
            ids[i, :len(sequence)] = torch.tensor(sequence)
            mask[i, start:start + len(sequence)] = 1
        cache = self._head_cache(head)
        if cache is not None:
            cache.batch_repeat_interleave(count)
        positions = (start + torch.arange(width))[None, :].expand(count, -1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), use_cache=cache is not None,
                         **cache_argument(self.model, cache))
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)
        scores = torch.zeros(count, dtype=torch.float64)
        for i, (rest, answer) in enumerate(pairs):
            picked = [logprobs[i, len(rest) - 1 + t, token].double() for t, token in enumerate(answer)]
            scores[i] = torch.stack(picked).sum() / len(answer)
        return scores.reshape(len(rests), len(self.answers))


def generate(model, tokenizer, prompt_ids: list[int], limit: int, stop_ids: set[int], stop_at_newline: bool,
             device: str) -> str:
    """Greedy answer: stops at an end token, at ``limit`` tokens, or at a line break after some text."""
    out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
    cache, token = cache_of(out), int(out.logits[0, -1].argmax())
    generated: list[int] = []
    for _ in range(limit):
        if token in stop_ids:
            break
        generated.append(token)
        if stop_at_newline and "\n" in tokenizer.decode(generated).lstrip():
            break
        out = model(input_ids=torch.tensor([[token]], device=device), use_cache=True, **cache_argument(model, cache))
        cache, token = cache_of(out), int(out.logits[0, -1].argmax())
    text = tokenizer.decode(generated, skip_special_tokens=True)
    return (text.strip().split("\n")[0] if stop_at_newline else text).strip()


# -- main ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="CSV with the texts to label")
    parser.add_argument("output", type=Path, help="where to write INPUT's rows with a prediction column")
    parser.add_argument("--base-model", default=None, help="a local folder with the base model (default: the hub id)")
    parser.add_argument("--text-column", default=None, help="the column with the texts (default: as in training)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: what PvF Studio used)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-rows", type=int, default=16, help="rows scored together (more: faster, more memory)")
    args = parser.parse_args(argv)

    prompt = json.loads((HERE / "prompt.json").read_text(encoding="utf-8"))
    calibration = json.loads((HERE / "calibration.json").read_text(encoding="utf-8"))
    columns, rows = read_rows(args.input)
    column = text_column(columns, args.text_column, prompt.get("text_column"))
    model, tokenizer = load(args.base_model or prompt["base_model"], args.dtype or prompt["dtype"], args.device)
    tokenizer.chat_template = prompt["chat_template"]  # the template PvF Studio rendered with
    prompter = Prompter(prompt, tokenizer)
    labels = prompt["labels"]
    scorer = LabelScorer(model, prompt["answer_ids"], tokenizer.pad_token_id or 0, args.device)
    extra = ["prediction"] + ([f"p_{label}" for label in labels] if prompt["task"] == "classification" else [])
    texts = [(row.get(column) or "").strip() for row in rows]
    with torch.inference_mode():
        if prompt["task"] == "classification":
            bias = torch.tensor(calibration.get("log_bias") or [0.0] * len(labels), dtype=torch.float64)
            split = [prompter.ids(text) for text in texts]
            order = sorted(range(len(rows)), key=lambda i: (split[i][0], len(split[i][1])))  # same head together
            done = 0
            while done < len(order):
                head = split[order[done]][0]
                batch = [order[done]]
                while (done + len(batch) < len(order) and len(batch) < args.batch_rows
                       and split[order[done + len(batch)]][0] == head):
                    batch.append(order[done + len(batch)])
                scores = scorer(head, [split[i][1] for i in batch])
                probs = torch.softmax(torch.log_softmax(scores, dim=-1) - bias, dim=-1)
                for i, row_probs in zip(batch, probs):
                    rows[i]["prediction"] = labels[int(row_probs.argmax())]
                    for label, p in zip(labels, row_probs.tolist()):
                        rows[i][f"p_{label}"] = f"{p:.4f}"
                done += len(batch)
                print(f"{done}/{len(rows)} rows", file=sys.stderr)
        else:
            generation = prompt["generation"]
            for n, (row, text) in enumerate(zip(rows, texts), 1):
                head, rest = prompter.ids(text)
                limit = min(generation["max_answer_tokens"], 2 * len(prompter.encode(text)) + 16)
                row["prediction"] = generate(model, tokenizer, head + rest, limit, set(generation["stop_ids"]),
                                             generation["stop_at_newline"], args.device)
                if n % 10 == 0 or n == len(rows):
                    print(f"{n}/{len(rows)} rows", file=sys.stderr)
    with open(args.output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c for c in columns if c not in extra] + extra,
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
