"""Contender b: a Faust agent writing one RocksDB table entry per event (common Faust code).

With ``BENCH_FAUST_BARE=1`` (contender b0) the agent only counts and acknowledges each event:
the rate no Faust agent on this machine and broker can exceed, whatever it does per event.
"""

import json
import os
import sys

import faust

from cartwatch_dev.bench.contenders import ContenderConfig, Tally, fold
from config.kafka import broker_credentials

config = ContenderConfig.from_env()
app = faust.App(
    config.group,
    broker=f"kafka://{config.bootstrap}",
    broker_credentials=broker_credentials(config.kafka),
    store="rocksdb://",
    datadir=str(config.workdir / "faust-data"),
    topic_partitions=config.partitions,
    web_port=int(os.environ["BENCH_WEB_PORT"]),
    web_host="127.0.0.1",
    web_bind="127.0.0.1",
    consumer_auto_offset_reset="earliest",
    autodiscover=False,
)
source = app.topic(*config.topics, key_serializer="raw", value_serializer="raw")
carts = app.Table("carts", default=None, partitions=config.partitions)
tally = Tally(config.expect, config.result)


BARE = os.environ.get("BENCH_FAUST_BARE") == "1"


@app.agent(source)
async def fold_carts(stream: faust.StreamT) -> None:
    async for event in stream.events():
        if not BARE:
            document = json.loads(event.value)
            cart_id = document["cart_id"]
            carts[cart_id] = fold(carts.get(cart_id), document)
        tally.add()


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
