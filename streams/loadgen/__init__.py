"""Load generator: seeded shopping traffic (``model``) and a thin Kafka producer (``produce``)."""

from streams.loadgen.model import (
    Expected,
    LoadSpec,
    Message,
    expected_outcomes,
    generate,
    silent_carts,
)

__all__ = ["Expected", "LoadSpec", "Message", "expected_outcomes", "generate", "silent_carts"]
