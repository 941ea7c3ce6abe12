"""Indexes tansu's sqlite header table: tansu 0.6 looks up each fetched record's
headers with a scan of the whole header table, so without this index reading a
topic slows down as it grows (20,000 messages took 15 s to read instead of 1 s).

    python3 scripts/tansu-index.py PATH/tansu.db
"""
import sqlite3
import sys
import time

for attempt in range(50):
    try:
        c = sqlite3.connect(sys.argv[1], timeout=30)
        c.execute("create index if not exists header_topition_offset on header (topition, offset_id)")
        c.commit()
        sys.exit(0)
    except sqlite3.OperationalError:
        time.sleep(0.2)
sys.exit(1)
