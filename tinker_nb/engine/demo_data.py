"""Deterministic synthetic text: a general 'story' corpus for pretraining and a private-domain set for demos.

Torch-free. Both generators are seeded and use only ``random.Random``, so the same seed gives the same
text on every machine and Python version >= 3.8.
"""

from __future__ import annotations

import random

__all__ = ["demo_records", "health_leaflets", "story_corpus"]

_NAMES = ["Anna", "Ben", "Clara", "David", "Ella", "Finn", "Grace", "Hugo", "Iris", "Jack", "Lena", "Max",
          "Nora", "Omar", "Pia", "Sam", "Tom", "Zoe"]
_ANIMALS = ["cat", "dog", "bird", "fox", "rabbit", "horse", "duck", "frog", "mouse", "bear"]
_ADJ = ["little", "big", "happy", "sleepy", "brave", "quiet", "funny", "old", "young", "kind", "red", "brown"]
_PLACES = ["park", "garden", "river", "forest", "school", "market", "beach", "farm", "town", "hill"]
_VERBS_PAST = ["ran", "walked", "jumped", "went", "looked", "played", "sang", "danced", "waited", "slept"]
_OBJECTS = ["ball", "apple", "book", "hat", "kite", "cake", "box", "flower", "stick", "cup"]
_FEEL = ["happy", "sad", "tired", "excited", "hungry", "scared", "proud", "calm"]
_TIME = ["One day", "In the morning", "After lunch", "Every evening", "Last summer", "On Sunday", "At night"]
_WEATHER = ["sunny", "rainy", "cold", "warm", "windy", "bright"]


def _story(r: random.Random) -> str:
    n, a, adj, p = r.choice(_NAMES), r.choice(_ANIMALS), r.choice(_ADJ), r.choice(_PLACES)
    o, f, t, w = r.choice(_OBJECTS), r.choice(_FEEL), r.choice(_TIME), r.choice(_WEATHER)
    v = r.choice(_VERBS_PAST)
    templates = [
        f"{t}, {n} and the {adj} {a} {v} to the {p}. It was {w}. They found a {o} and felt {f}.",
        f"The {adj} {a} lived near the {p}. {t}, it {v} with {n}. {n} gave the {a} a {o}.",
        f"{n} had a {adj} {a}. The {a} liked the {o} very much. {t}, they {v} to the {p} and played.",
        f"It was a {w} day. {n} {v} to the {p} with a {o}. The {a} was {f}, and {n} was {f} too.",
        f"{t}, {n} saw a {adj} {a} at the {p}. \"Hello,\" said {n}. The {a} looked at the {o} and smiled.",
        f"The {a} and {n} {v} all day. When the sun went down, they went home. {n} was {f}.",
    ]
    return r.choice(templates)


def story_corpus(n: int, *, seed: int = 0) -> list[str]:
    """``n`` short, readable English stories (1–3 sentences each) from a seeded template grammar."""
    r = random.Random(seed)
    return [_story(r) for _ in range(n)]


_SYMPTOMS = ["mild headache", "persistent cough", "sore throat", "lower back pain", "fever and chills",
             "shortness of breath", "dizziness", "fatigue", "nausea", "knee swelling", "skin rash", "chest tightness"]
_DURATION = ["since yesterday", "for three days", "for a week", "for two weeks", "since Monday", "for a month"]
_FINDINGS = ["vital signs are stable", "temperature is 38.2 C", "blood pressure is 142/90", "lungs are clear",
             "mild tenderness on exam", "oxygen saturation is 97 percent", "no acute distress"]
_PLANS = ["prescribed rest and fluids", "started ibuprofen 400 mg", "ordered a chest x-ray",
          "referred to physiotherapy", "scheduled a follow-up in one week", "advised a blood test",
          "started amoxicillin 500 mg", "recommended ice and elevation"]
_AGES = list(range(19, 88))


def demo_records(n: int, *, seed: int = 0) -> list[str]:
    """``n`` synthetic clinical notes: the 'private' fine-tuning domain of the demo and notebooks.

    Every note starts with "Patient note:" so a fine-tune visibly changes what the model writes after it.
    No real person is described; names are absent by construction.
    """
    r = random.Random(10_000 + seed)
    out = []
    for _ in range(n):
        sex = r.choice(["male", "female"])
        out.append(f"Patient note: {r.choice(_AGES)} year old {sex} reports {r.choice(_SYMPTOMS)} "
                   f"{r.choice(_DURATION)}. On exam, {r.choice(_FINDINGS)}. Plan: {r.choice(_PLANS)}.")
    return out


_HEALTH = [
    "{n} felt sick, so {n} went to see the doctor.",
    "The doctor said {n} had a {s} and needed rest.",
    "{n} drank water and slept, and soon {n} felt better.",
    "The nurse was kind to {n} at the clinic.",
]


def health_sentences(n: int, *, seed: int = 0) -> list[str]:
    """A few simple sentences about doctors and feeling ill (general English, not clinical notes)."""
    r = random.Random(20_000 + seed)
    return [r.choice(_HEALTH).format(n=r.choice(_NAMES), s=r.choice(["cold", "fever", "cough", "headache"]))
            for _ in range(n)]


_DURATION_PHRASE = ["since yesterday", "for three days", "for a week", "for two weeks", "since Monday",
                    "for a month", "for a few hours", "for many years"]
_LEAFLET = [
    "A {s} that lasts {d} can have many causes, and most of them are not serious.",
    "If you have {s} {d}, see a doctor or a nurse.",
    "For {s}, doctors often {p_present}.",
    "Adults of {age} years and older should watch for {s}.",
    "At a check-up the nurse writes down whether {f}.",
    "During an exam, the doctor may find that {f}.",
    "A patient who reports {s} {d} should be examined by a doctor.",
    "The clinic {p_past} for a {age} year old with {s}.",
    "Many people with {s} feel better after rest and fluids.",
    "Ask your doctor before you take ibuprofen 400 mg or amoxicillin 500 mg.",
    "A doctor may ask how old you are, whether you are male or female, and what you feel.",
    "Write down when the {s} started, for example {d}.",
    "Call for help if you have {s} together with {s2}.",
    "The report says that {f}.",
    "A plan for {s} can include rest, fluids, a blood test or a follow-up visit.",
    "Patient information: {s} is common and often gets better with rest.",
    "Plan your visit: write down your questions and bring a list of your medicines.",
    "Note: call for help if you have {s} together with {s2}.",
    "Keep a note of your temperature, for example: 38.2 C in the evening.",
    "Feeling unwell? Plan: rest, drink fluids, and see a doctor if the {s} lasts {d}.",
    "Patient groups share advice on living with {s}.",
]
_PLAN_PRESENT = ["prescribe rest and fluids", "start ibuprofen 400 mg", "order a chest x-ray",
                 "refer patients to physiotherapy", "schedule a follow-up in one week", "advise a blood test",
                 "start amoxicillin 500 mg", "recommend ice and elevation"]


def health_leaflets(n: int, *, seed: int = 0) -> list[str]:
    """``n`` sentences of *public* health-leaflet English (general medical vocabulary, no notes).

    Part of the embedded model's pretraining corpus, so the model knows the words that clinical text
    uses (symptoms, findings, drugs, ages) the way any public base model does. It never sees the
    private notes' format ("Patient note: … On exam, … Plan: …"): that is what the DP fine-tune teaches.
    """
    r = random.Random(30_000 + seed)
    out = []
    for _ in range(n):
        s, s2 = r.sample(_SYMPTOMS, 2)
        out.append(r.choice(_LEAFLET).format(
            s=s, s2=s2, d=r.choice(_DURATION_PHRASE), f=r.choice(_FINDINGS), age=r.choice(_AGES),
            p_present=r.choice(_PLAN_PRESENT), p_past=r.choice(_PLANS)))
    return out
