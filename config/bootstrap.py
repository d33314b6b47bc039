"""Broker addresses: the Faust-style URL list users configure, as aiokafka wants it."""


class BootstrapError(ValueError):
    """``CARTWATCH_BROKER`` names no usable broker; the message says which part."""


def parse_bootstrap(value: str) -> str:
    """Turn Faust-style broker URLs (`kafka://h:p;kafka://h2:p`) into `h:p,h2:p` for aiokafka."""
    servers = []
    for item in value.replace(";", ",").split(","):
        address = item.strip().removeprefix("kafka://").rstrip("/")
        if not address:
            continue
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, "9092"
        if not host or not port.isdigit():
            raise BootstrapError(f"CARTWATCH_BROKER: {item.strip()!r} is not host:port")
        servers.append(f"{host}:{port}")
    if not servers:
        raise BootstrapError(f"CARTWATCH_BROKER: {value!r} names no broker")
    return ",".join(servers)
