"""Keep a local farm's Serve replicas on loopback: a hook Ray runs in each worker process.

Ray Serve (2.60) binds every replica's inter-deployment gRPC server to ``[::]``, all
interfaces, whatever the node's address. A local farm's node address is 127.0.0.1
(`farm.local_farm`), so every caller of a replica is on this machine: the hook, which Ray
runs in each of the local farm's worker processes before any replica starts, makes that
server bind 127.0.0.1 instead. Nothing else is changed; a cluster never runs the hook.
"""

from __future__ import annotations

from typing import Any

ALL_INTERFACES = "[::]:"


def bind_replicas_to_loopback() -> None:
    """Make this worker's Serve replicas listen on 127.0.0.1 (Ray's worker setup hook)."""
    from ray.serve._private import replica

    bind = replica.add_port_to_grpc_server
    if getattr(bind, "farm_loopback", False):
        return

    def loopback(server: Any, address: str) -> int:
        if address.startswith(ALL_INTERFACES):
            address = "127.0.0.1:" + address[len(ALL_INTERFACES) :]
        return bind(server, address)

    loopback.farm_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = loopback
