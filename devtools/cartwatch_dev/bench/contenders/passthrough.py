"""Contender a: raw aiokafka consume -> JSON decode -> produce, the Python ceiling."""

import asyncio
import json

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from cartwatch_dev.bench.contenders import ContenderConfig, Tally
from config.kafka import client_options


async def main(config: ContenderConfig) -> None:
    consumer = AIOKafkaConsumer(
        *config.topics, bootstrap_servers=config.bootstrap, group_id=config.group,
        auto_offset_reset="earliest", max_poll_records=2000, **client_options(config.kafka),
    )
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap, linger_ms=5,
                                **client_options(config.kafka))
    await consumer.start()
    await producer.start()
    tally = Tally(config.expect, config.result)
    try:
        while not tally.done:
            batch = await consumer.getmany(timeout_ms=500)
            pending = []
            for records in batch.values():
                for record in records:
                    document = json.loads(record.value)
                    value = json.dumps(document).encode()
                    pending.append(await producer.send(config.output_topic, value, key=record.key))
            if pending:
                await asyncio.gather(*pending)
                tally.add(len(pending))
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main(ContenderConfig.from_env()))
