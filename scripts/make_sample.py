"""Generate qaloop's synthetic demo dataset (src/qaloop/data/sample_questions.csv).

The Yahoo! Answers data is research-only, so the demo ships its own: templated questions and
reference answers in the Kaggle layout (class_index, question_title, question_content,
best_answer), line breaks written as a literal backslash-n like the real dataset. Seeded, so
rerunning it reproduces the file byte for byte:  python scripts/make_sample.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "qaloop" / "data" / "sample_questions.csv"

TOPICS = {
    1: (
        "Society & Culture",
        ["tradition", "holiday", "wedding custom", "festival", "etiquette rule"],
    ),
    2: (
        "Science & Mathematics",
        ["photosynthesis", "gravity", "prime number", "volcano", "rainbow"],
    ),
    3: ("Health", ["headache", "sleep schedule", "vitamin D", "back pain", "hydration"]),
    4: (
        "Education & Reference",
        ["essay outline", "thesis", "exam plan", "citation", "scholarship"],
    ),
    5: (
        "Computers & Internet",
        ["password manager", "wifi router", "laptop battery", "backup", "browser cache"],
    ),
    6: ("Sports", ["marathon", "free throw", "swimming stroke", "tennis serve", "warm-up"]),
    7: (
        "Business & Finance",
        ["budget", "credit score", "savings account", "invoice", "small loan"],
    ),
    8: (
        "Entertainment & Music",
        ["guitar chord", "film score", "playlist", "drum beat", "karaoke song"],
    ),
    9: (
        "Family & Relationships",
        ["friendship", "first date", "sibling argument", "family dinner", "apology"],
    ),
    10: (
        "Politics & Government",
        ["election", "city council", "tax form", "passport", "jury duty"],
    ),
}

QUESTIONS = [
    ("How do I get better at {t}?", "Any tips from people with experience?"),
    ("What is the best way to understand {t}?", ""),
    ("Why is {t} so important?", "I keep hearing about it and want to know why."),
    ("What should a beginner know about {t}?", ""),
    ("Is it true that {t} is hard to learn?", "My friend says it takes years."),
    ("What mistakes do people make with {t}?", ""),
    ("How long does it take to master {t}?", ""),
    ("Can you explain {t} in simple words?", "Please no jargon."),
]

OPENERS = [
    "Start small and be consistent with {t}.",
    "The key idea behind {t} is practice and patience.",
    "Most people find {t} easier once they learn the basics.",
    "With {t}, the first step is to understand why it matters.",
]
DETAILS = [
    "Set a clear goal, measure your progress every week and adjust what does not work.",
    "Read one good guide, then try it yourself and ask someone experienced for feedback.",
    "Avoid rushing: small daily steps beat one long session once a month.",
    "Write down what you learn, because explaining it to others makes it stick.",
    "Common mistakes are skipping the basics and copying others without understanding.",
    "It usually takes a few months of regular effort to feel confident.",
]
CLOSERS = [
    "Good luck!",
    "Hope this helps.",
    "You will get there with time.",
    "Ask again if something is unclear.",
]

SPANISH = [
    (
        "¿Cómo puedo mejorar mi {t}?",
        "Empieza poco a poco con {t} y practica cada día. Pide consejos a alguien con experiencia.",
    ),
    (
        "¿Qué es lo más importante de {t}?",
        "Lo más importante de {t} es entender lo básico antes de avanzar. "
        "La paciencia ayuda mucho.",
    ),
]


def rows(seed: int = 7) -> list[list[str]]:
    rng = random.Random(seed)
    out: list[list[str]] = []
    seen: set[str] = set()
    for cls, (_, things) in TOPICS.items():
        for t in things:
            for title, content in QUESTIONS:
                title_text = title.format(t=t)
                if title_text in seen:
                    continue
                seen.add(title_text)
                parts = [rng.choice(OPENERS).format(t=t), rng.choice(DETAILS), rng.choice(DETAILS)]
                answer = " ".join(dict.fromkeys(parts))
                if rng.random() < 0.3:
                    answer += "\\n\\n" + rng.choice(CLOSERS)  # literal \n as in the dataset
                out.append([str(cls), title_text, content, answer])
            if rng.random() < 0.5:
                title, answer = rng.choice(SPANISH)
                out.append([str(cls), title.format(t=t), "", answer.format(t=t)])
    return out


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["class_index", "question_title", "question_content", "best_answer"])
        writer.writerows(rows())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
