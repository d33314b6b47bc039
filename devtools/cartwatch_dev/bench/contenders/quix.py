"""Contender c: Quix Streams folding the same events into per-cart state in its RocksDB store."""

import json

from quixstreams import Application, State

from cartwatch_dev.bench.contenders import ContenderConfig, Tally, fold


def main(config: ContenderConfig) -> None:
    app = Application(
        broker_address=config.bootstrap,
        consumer_group=config.group,
        auto_offset_reset="earliest",
        state_dir=str(config.workdir / "quix-state"),
        loglevel="WARNING",
    )
    tally = Tally(config.expect, config.result)

    def update(document: dict, state: State) -> None:
        state.set("cart", fold(state.get("cart"), document))
        if tally.add():
            app.stop()

    for name in config.topics:
        topic = app.topic(name, key_deserializer="str", value_deserializer="json")
        app.dataframe(topic).update(update, stateful=True)
    app.run()


if __name__ == "__main__":
    main(ContenderConfig.from_env())
    print(json.dumps({"stopped": True}))
