#!/usr/bin/env python3
"""What one commit of the decision log writes: WAL frames per commit, by B-tree.

Creates a scratch SQLite database with the decision log's schema (read from
src/audit/mod.rs and src/audit/lookup.rs), fills it with 20,000 records, then appends
records in commits of --batch, as the log's writer does under load, extending the lookup
table in a transaction of its own once 256 records are uncovered, and reads the WAL's frame
headers (page number, commit marker). Each page is mapped to its table or index with
SQLite's `dbstat`. --old-layout instead puts the three indexes that earlier versions kept
on `decisions` back, with no lookup table.

Usage: bench/wal_frames.py [--batch 12] [--page-size 4096] [--old-layout]
                           [--drop-index NAME ...] [--record-from decisions.db]
Every record is a copy of one real record (the newest in --record-from, else the sample
below, an allowed /v1/authorize decision of bench/load.sh), with its own time-ordered id.
"""
import argparse
import collections
import hashlib
import json
import os
import pathlib
import sqlite3
import struct
import tempfile
import time
import uuid

SAMPLE = json.loads(pathlib.Path(__file__).with_name("wal_frames_sample.json").read_text())


def schema_sql(repo, module):
    source = (repo / "src/audit" / module).read_text()
    return source.split('SCHEMA_SQL: &str = "', 1)[1].split('";', 1)[0]


OLD_INDEXES = """
CREATE INDEX decisions_by_id ON decisions (decision_id);
CREATE INDEX decisions_by_time ON decisions (time_ms);
CREATE INDEX decisions_by_subject_tool ON decisions (subject, tool);
"""
FILL_WHEN_IDLE_RECORDS = 256


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=12, help="records per commit")
    parser.add_argument("--page-size", type=int, default=4096)
    parser.add_argument("--drop-index", action="append", default=[])
    parser.add_argument("--record-from", help="a decisions.db to copy the newest record of")
    parser.add_argument("--commits", type=int, default=256)
    parser.add_argument("--old-layout", action="store_true",
                        help="the indexes on decisions that earlier versions kept, no lookup table")
    args = parser.parse_args()
    repo = pathlib.Path(__file__).resolve().parent.parent
    record = SAMPLE
    if args.record_from:
        row = sqlite3.connect(args.record_from).execute(
            "SELECT record FROM decisions ORDER BY seq DESC LIMIT 1").fetchone()
        record = json.loads(row[0])

    work = tempfile.mkdtemp()
    path = os.path.join(work, "decisions.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size={args.page_size}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.executescript(schema_sql(repo, "mod.rs"))
    if args.old_layout:
        db.executescript(OLD_INDEXES)
    else:
        db.executescript(schema_sql(repo, "lookup.rs"))
    for name in args.drop_index:
        db.execute(f"DROP INDEX {name}")

    state = {"seq": 0, "prev": "0" * 64, "counter": 0, "covered": 0}

    def decision_id():
        # Time-ordered like the broker's UUIDv7 ids, so the id index grows at its right edge.
        state["counter"] += 1
        return "%012x-%04x-%s" % (int(time.time() * 1000), state["counter"] & 0xFFFF,
                                  uuid.uuid4().hex[:16])

    def append(count):
        db.execute("BEGIN")
        for _ in range(count):
            state["seq"] += 1
            did = decision_id()
            text = json.dumps(dict(record, decision_id=did, request_id=did),
                              separators=(",", ":"))
            digest = hashlib.sha256((state["prev"] + "\n" + text).encode()).hexdigest()
            db.execute(
                "INSERT INTO decisions (seq, decision_id, kind, time_ms, stage, reason, decision,"
                " subject, tool, record, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (state["seq"], did, "decision", int(time.time() * 1000), "policy", "allowed",
                 "allow", "bench-agent", "bench___echo", text, state["prev"], digest))
            state["prev"] = digest
        db.execute("COMMIT")
        if not args.old_layout and state["seq"] - state["covered"] >= FILL_WHEN_IDLE_RECORDS:
            db.execute("BEGIN")
            db.execute("INSERT INTO decisions_lookup SELECT seq, decision_id, kind, time_ms,"
                       " decision, subject, tool FROM decisions WHERE seq > ?",
                       (state["covered"],))
            db.execute("COMMIT")
            state["covered"] = state["seq"]

    for _ in range(200):
        append(100)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for _ in range(args.commits):
        append(args.batch)

    wal = pathlib.Path(path + "-wal").read_bytes()
    commits, current, offset = [], [], 32
    while offset + 24 + args.page_size <= len(wal):
        page, size_after_commit = struct.unpack(">II", wal[offset:offset + 8])
        current.append(page)
        if size_after_commit:
            commits.append(current)
            current = []
        offset += 24 + args.page_size
    owner = {page: (name, kind)
             for name, page, kind in db.execute("SELECT name, pageno, pagetype FROM dbstat")}
    by_btree = collections.Counter(owner.get(p, ("?", "?")) for c in commits for p in c)
    frames = sum(map(len, commits))
    # Per batch commit; the lookup table's own transactions are shared out among them.
    n = args.commits
    layout = "old layout" if args.old_layout else "lookup table"
    print(f"page size {args.page_size}, {args.batch} records per commit, {layout}, dropped "
          f"{args.drop_index or 'none'}: {frames / n:.2f} frames per commit, "
          f"{frames * args.page_size / n / args.batch:.0f} WAL bytes per record "
          f"(record JSON {len(json.dumps(record, separators=(',', ':')))} bytes)")
    for (name, kind), count in by_btree.most_common():
        print(f"  {name} {kind}: {count / n:.2f}")


if __name__ == "__main__":
    main()
