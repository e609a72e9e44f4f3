#!/usr/bin/env python3
"""Generate synthetic "assessment attempt" documents shaped like the public course dataset.

Usage:
    python3 data/gen_attempts.py --count N [--seed S] [--format array|lines]
                                 [--duplicate-share F] [--out FILE]

Deterministic: the same arguments give byte-identical output. Standard library only.

Each document has the real dataset's shape and quirks (see data/attempts/README.md):
numbers and booleans stored as strings ("1.0", "false", epoch seconds with varying
decimals), ISO-8601 millisecond timestamps with Z, `correct` only on correct options,
`at`/`submitted` only on touched options, and at small rates: missing `sequences.counts`
(~2%), questions without the `user_*` keys (~3%), missing `certification` (~5%) and
documents whose numbers and booleans are native JSON values (~3%).

`--duplicate-share F` re-emits round(N * F) of the N attempts a second time (identical
documents, placed later in the output) for replay and de-duplication tests.
"""

import argparse
import datetime
import json
import random
import sys
import uuid

EXAM_NAMES = [
    "Normal Forms and All That Jazz Master Class",
    "The Principles of Microservices",
    "Introduction to Big Data",
    "Learning Git",
    "Introduction to Python",
    "Intermediate Python Programming",
    "Learning to Program in R",
    "Beginning C# Programming",
    "Software Architecture Basics",
    "Mastering Docker",
    "Learning Apache Cassandra",
    "Learning Apache Hadoop",
    "Learning Apache Spark",
    "Introduction to Machine Learning",
    "Data Science with Microsoft Azure and R",
    "Networking for People Who Hate Networking",
    "Understanding the Grid",
    "Event-Driven Microservices",
    "Introduction to Java 8",
    "Mastering Python Networking",
    "Learning SQL",
    "Relational Theory for Computer Professionals",
    "Refactoring Legacy Code",
    "Design Patterns in Java",
    "Practical Cryptography",
    "Web Security Basics",
    "Introduction to Shiny",
    "Learning Linux System Administration",
    "Using Storytelling Effectively",
    "Being a Better Introvert",
    "Great Bash",
    "Cloud Native Architecture Fundamentals",
    "An Introduction to d3.js: From Scattered to Scatterplot",
    "What's New in JavaScript",
    "Hadoop Fundamentals for Data Scientists",
    "Nulls, Three-valued Logic and Missing Information",
    "Collaborating with Git",
    "Getting Ready for Kubernetes",
    "Python Epiphanies",
    "TCP/IP",
]

# Quirk rates, per document unless said otherwise.
MISSING_COUNTS = 0.02
MISSING_USER_KEYS = 0.03  # per question
MISSING_CERTIFICATION = 0.05
NATIVE_TYPES = 0.03
UNANSWERED = 0.01  # per question: nothing checked, not submitted
TOUCHED_UNCHECKED = 0.05  # per unchecked option: clicked and unclicked again (has `at`)

START = datetime.datetime(2017, 6, 1, tzinfo=datetime.timezone.utc)
SPAN_SECONDS = 240 * 24 * 3600


def new_uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_exams(rng):
    exams = []
    for name in EXAM_NAMES:
        questions = []
        for _ in range(rng.randint(3, 10)):
            n_options = rng.randint(2, 6)
            options = [new_uuid(rng) for _ in range(n_options)]
            # Most questions have one correct option; some have several (never all).
            n_correct = 1 if n_options == 2 or rng.random() < 0.6 else rng.randint(2, n_options - 1)
            correct = set(rng.sample(options, n_correct))
            questions.append({"id": new_uuid(rng), "options": options, "correct": correct})
        exams.append(
            {
                "name": name,
                "base_exam_id": new_uuid(rng),
                "sequence_id": new_uuid(rng),
                "questions": questions,
                "popularity": rng.uniform(0.2, 3.0),
            }
        )
    return exams


def iso_millis(t):
    """Epoch seconds (float) -> '2018-01-23T14:23:19.082Z'."""
    dt = datetime.datetime.fromtimestamp(round(t, 3), tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def epoch_string(rng, t):
    """Epoch seconds as the dataset writes them: a string with 4 to 7 decimals."""
    decimals = rng.choice([4, 5, 6, 6, 6, 6, 7])
    text = "%.*f" % (decimals, t)
    return text.rstrip("0").rstrip(".") if rng.random() < 0.1 else text


def answer_question(rng, question, ability):
    """Which options the student checked, and the resulting user_result."""
    options, correct = question["options"], question["correct"]
    if rng.random() < UNANSWERED:
        return set(), None
    r = rng.random()
    if r < ability:
        checked = set(correct)
    elif r < ability + (1 - ability) / 2 and len(correct) > 1:
        in_order = [o for o in options if o in correct]  # sets iterate in hash order
        checked = set(rng.sample(in_order, rng.randint(1, len(correct) - 1)))
    else:
        wrong = [o for o in options if o not in correct]
        checked = set(rng.sample(wrong, 1))
        extra = [o for o in options if o in correct and rng.random() < 0.5]
        checked.update(extra)
    if checked - correct:
        result = "incorrect"
    elif checked == correct:
        result = "correct"
    else:
        result = "missed_some"
    return checked, result


def make_attempt(rng, exam):
    started = START.timestamp() + rng.uniform(0, SPAN_SECONDS)
    started = round(started, 3)
    ability = rng.uniform(0.3, 0.95)
    native = rng.random() < NATIVE_TYPES
    t = started
    counts = {"incomplete": 0, "submitted": 0, "incorrect": 0, "correct": 0, "unanswered": 0}
    questions = []
    order = list(exam["questions"])
    rng.shuffle(order)
    for q in order:
        checked, result = answer_question(rng, q, ability)
        t += rng.uniform(2.0, 20.0)
        options = []
        shuffled = list(q["options"])
        rng.shuffle(shuffled)
        for oid in shuffled:
            opt = {"checked": oid in checked}
            if oid in checked:
                t += rng.uniform(0.2, 6.0)
                opt["at"] = iso_millis(t)
                opt["id"] = oid
                opt["submitted"] = 1
            elif rng.random() < TOUCHED_UNCHECKED:
                t += rng.uniform(0.2, 6.0)
                opt["at"] = iso_millis(t)
                opt["id"] = oid
            else:
                opt["id"] = oid
            if oid in q["correct"]:
                opt["correct"] = True
            options.append(opt)
        if result is None:
            counts["unanswered"] += 1
            result, submitted = "incorrect", False
        else:
            counts["submitted"] += 1
            submitted = True
        if result == "correct":
            counts["correct"] += 1
        elif result == "incorrect":
            counts["incorrect"] += 1
        else:
            counts["incomplete"] += 1
        question = {}
        if rng.random() >= MISSING_USER_KEYS:
            question["user_incomplete"] = result == "missed_some"
            question["user_correct"] = result == "correct"
        question["options"] = options
        if "user_correct" in question:
            question["user_submitted"] = submitted
        question["id"] = q["id"]
        if "user_correct" in question:
            question["user_result"] = result
        questions.append(question)

    total = len(questions)
    keen_t = t + rng.uniform(1.0, 60.0)
    keen_ts = keen_t if native else epoch_string(rng, keen_t)
    sequences = {"questions": questions, "attempt": 1, "id": exam["sequence_id"]}
    if rng.random() >= MISSING_COUNTS:
        sequences["counts"] = {
            "incomplete": counts["incomplete"],
            "submitted": counts["submitted"],
            "incorrect": counts["incorrect"],
            "all_correct": counts["correct"] == total,
            "correct": counts["correct"],
            "total": total,
            "unanswered": counts["unanswered"],
        }
    doc = {
        "keen_timestamp": keen_ts,
        "max_attempts": 1.0 if native else "1.0",
        "started_at": iso_millis(started),
        "base_exam_id": exam["base_exam_id"],
        "user_exam_id": new_uuid(rng),
        "sequences": sequences,
        "keen_created_at": keen_ts,
    }
    if rng.random() >= MISSING_CERTIFICATION:
        certified = rng.random() < 0.08
        doc["certification"] = certified if native else ("true" if certified else "false")
    # A 24-hex id like a MongoDB ObjectId: 4 bytes of time, 8 random bytes.
    doc["keen_id"] = "%08x%016x" % (int(keen_t), rng.getrandbits(64))
    doc["exam_name"] = exam["name"]
    return doc


def generate(count, seed, duplicate_share):
    rng = random.Random(seed)
    exams = make_exams(rng)
    weights = [e["popularity"] for e in exams]
    docs = [make_attempt(rng, rng.choices(exams, weights)[0]) for _ in range(count)]
    n_dup = round(count * duplicate_share)
    if n_dup:
        originals = rng.sample(range(count), n_dup)
        out = [(i, doc) for i, doc in enumerate(docs)]
        for i in originals:
            # A replay arrives after the original: somewhere later in the stream.
            out.append((rng.uniform(i + 0.5, count), docs[i]))
        out.sort(key=lambda pair: pair[0])
        docs = [doc for _, doc in out]
    return docs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True, help="number of distinct attempts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["array", "lines"], default="array",
                        help="one JSON array, or one document per line (JSON Lines)")
    parser.add_argument("--duplicate-share", type=float, default=0.0,
                        help="share of attempts emitted a second time (0..1)")
    parser.add_argument("--out", help="output file (default: stdout)")
    args = parser.parse_args(argv)
    if args.count < 0:
        parser.error("--count must be >= 0")
    if not 0.0 <= args.duplicate_share <= 1.0:
        parser.error("--duplicate-share must be between 0 and 1")

    docs = generate(args.count, args.seed, args.duplicate_share)
    texts = [json.dumps(doc) for doc in docs]
    if args.format == "array":
        body = "[" + ", ".join(texts) + "]"
    else:
        body = "".join(text + "\n" for text in texts)
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="\n") as f:
            f.write(body)
    else:
        sys.stdout.write(body)


if __name__ == "__main__":
    main()
