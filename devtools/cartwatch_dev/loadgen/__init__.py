"""Load generator: seeded shopping traffic and its ledger (``model``), the outputs the ledger
says a correct pipeline emits and how to judge observed ones (``ledger``), and a thin Kafka
producer (``produce``)."""

from cartwatch_dev.loadgen.ledger import Expected, Verdict, compare, expected_outcomes
from cartwatch_dev.loadgen.model import (
    LoadSpec,
    Message,
    Traffic,
    generate,
    generate_traffic,
    silent_carts,
)

__all__ = [
    "Expected",
    "LoadSpec",
    "Message",
    "Traffic",
    "Verdict",
    "compare",
    "expected_outcomes",
    "generate",
    "generate_traffic",
    "silent_carts",
]
