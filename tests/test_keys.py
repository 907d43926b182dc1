"""jobs/keys.py is the one place key names are built: its docstring's table, the README's key
table and the names Keys builds list the same keys."""
import re
from pathlib import Path

import jobs.keys
from jobs.keys import Keys

ROOT = Path(__file__).resolve().parent.parent


def _kinds(names: list[str]) -> set[str]:
    """'stream:fast', 'job:<id>', 'applied:<group>:<job id>' -> 'stream', 'job', 'applied'."""
    return {n.strip().strip("`").split(":")[0] for n in names if n.strip()}


def _built_by_keys() -> set[str]:
    k = Keys("p:")
    samples = [k.events, k.dead, k.workers, k.wake("fast"), k.round("fast"), k.fair("fast", 2), k.cooldown(3, 4), k.stream("fast"), k.queue("fast"), k.job("1"),
               k.user(2), k.blob("ab"), k.worker("w"), k.applied("bot", "1"), k.quota(3, 4, "20261129"),
               k.blob_sizes, k.blob_expiry, k.blob_bytes]
    assert all(s.startswith("p:") for s in samples)
    return _kinds([s.removeprefix("p:") for s in samples])


def _docstring_table() -> set[str]:
    rows = [line for line in jobs.keys.__doc__.splitlines() if re.match(r"^ {4}\S", line)]
    return _kinds([name for row in rows for name in re.split(r"\s{2,}", row.strip())[0].split(",")])


def _readme_table() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("**Redis keys**"):]
    table = table[: table.index("\n\n", table.index("| key |"))]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return _kinds([name for row in rows for name in row.split("|")[1].split(",")])


def test_the_key_tables_and_the_key_builder_agree():
    built = _built_by_keys()
    assert built == {"events", "dead", "workers", "stream", "queue", "wake", "round", "fair", "job", "user",
                     "blob", "worker", "applied", "quota", "cooldown", "blobs"}
    assert _docstring_table() == built
    assert _readme_table() == built | {"bot"}  # bot:* is the bot's own namespace (bot/ modules name their keys)
