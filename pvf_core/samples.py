"""The sample dataset that ships with the app, generated here from templates (no third-party data).

Customer-support messages sorted into four teams (billing, technical, shipping, account). The templates
mix a topic phrase, a detail and a tone, and a few messages mention two topics, so the task is
learnable but not trivial for a small model.

``SAMPLE_PROMPTS`` are ready-made prompts for it (the Prompt builder's "Start from an example").
"""

from __future__ import annotations

import csv
import io
import random

from .prompting import PromptSpec

SAMPLE_NAME = "support_tickets_sample.csv"

TOPICS = {
    "billing": {
        "things": ["my invoice", "the last bill", "my credit card charge", "the refund I was promised",
                   "my subscription fee", "a double payment", "the VAT on my receipt", "my monthly plan price"],
        "problems": ["is wrong", "shows an amount I never agreed to", "was charged twice", "has not arrived",
                     "is higher than last month", "does not match my order", "was taken after I cancelled"],
    },
    "technical": {
        "things": ["the app", "the website", "the login page", "the export button", "the mobile app",
                   "the sync feature", "the search box", "the dashboard"],
        "problems": ["crashes when I open it", "is very slow today", "shows an error 500", "freezes on start-up",
                     "does not load at all", "keeps logging me out", "gives a blank screen"],
    },
    "shipping": {
        "things": ["my parcel", "the package", "my order", "the delivery", "the replacement item",
                   "the courier", "my shipment"],
        "problems": ["has not arrived after two weeks", "was left at the wrong address", "arrived damaged",
                     "is stuck in customs", "shows no tracking updates", "came with a missing item",
                     "was sent to my old address"],
    },
    "account": {
        "things": ["my password", "my account", "my email address", "my username", "two-factor login",
                   "my profile", "the account owner"],
        "problems": ["needs to be reset", "was locked after too many tries", "has to be changed",
                     "should be deleted", "was changed without my consent", "cannot be verified",
                     "must be moved to a colleague"],
    },
}
OPENINGS = ["Hi,", "Hello team,", "Good morning.", "", "", "Hey,", "Dear support,", "URGENT:", "Quick question:"]
CLOSINGS = ["Thanks.", "Please help.", "Can you fix this?", "", "", "What should I do?", "This is the third time!",
            "Regards, Sam", "Thank you in advance."]


def sample_rows(n: int = 480, seed: int = 7) -> list[tuple[str, str]]:
    """``n`` (message, team) pairs, balanced across teams, reproducible by seed."""
    rng = random.Random(seed)
    labels = list(TOPICS)
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n:
        label = labels[len(rows) % len(labels)]
        topic = TOPICS[label]
        sentence = f"{rng.choice(topic['things'])} {rng.choice(topic['problems'])}."
        sentence = sentence[0].upper() + sentence[1:]
        if rng.random() < 0.15:  # a distracting mention of another team's topic
            other = TOPICS[rng.choice([x for x in labels if x != label])]
            sentence += f" Also, {rng.choice(other['things'])} was fine last week."
        parts = [rng.choice(OPENINGS), sentence, rng.choice(CLOSINGS)]
        message = " ".join(p for p in parts if p)
        if message.lower() not in seen:
            seen.add(message.lower())
            rows.append((message, label))
    rng.shuffle(rows)
    return rows


def sample_csv_bytes(n: int = 480, seed: int = 7) -> bytes:
    """The sample dataset as CSV bytes with the columns ``message`` and ``team``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["message", "team"])
    writer.writerows(sample_rows(n, seed))
    return buffer.getvalue().encode("utf-8")


def register_sample(store=None):
    """Register the sample dataset in the workspace (once) and return it."""
    from .data import read_csv, register_dataset, suggest_mapping

    table = read_csv(sample_csv_bytes(), name=SAMPLE_NAME)
    return register_dataset(table, suggest_mapping(table), store=store)


# -- ready-made prompts for the sample (the Prompt builder's "Start from an example") ----------------------

SAMPLE_INSTRUCTION = ("Read the customer-support message and decide which team should handle it: billing, "
                      "technical, shipping or account.")
TEAM_DESCRIPTIONS = (
    "The teams:\n"
    "- billing: invoices, charges, refunds, prices, subscription fees and payments.\n"
    "- technical: the app or website not working: errors, crashes, slowness, blank or frozen screens.\n"
    "- shipping: parcels, deliveries, couriers, tracking, customs, damaged or missing items.\n"
    "- account: passwords, usernames, email addresses, two-factor login, locked or deleted accounts.\n"
    "A message may mention another topic in passing; pick the team for the problem the customer has now.")


SAMPLE_PROMPTS: dict[str, PromptSpec] = {  # named presets for the sample, from plain to elaborate
    "Plain zero-shot": PromptSpec(instruction=SAMPLE_INSTRUCTION, labels=sorted(TOPICS)),
    "With team descriptions": PromptSpec(instruction=SAMPLE_INSTRUCTION, context=TEAM_DESCRIPTIONS,
                                         labels=sorted(TOPICS)),
    "4 examples, balanced": PromptSpec(instruction=SAMPLE_INSTRUCTION, labels=sorted(TOPICS), shots=4,
                                       selection="balanced"),  # one solved message per team
}


def is_sample_task(labels) -> bool:
    """Whether a dataset's labels are the sample's teams (its presets then fit)."""
    return sorted(map(str, labels)) == sorted(TOPICS)
