"""``usnav keys``: ZeroMQ CURVE keys for publishing margins beyond loopback."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="create ZeroMQ CURVE keys (needed to publish beyond 127.0.0.1)",
        description="Creates a publisher key pair and one display-client key pair, and "
        "authorises that client. Give server.key and client.key_secret to the display machine.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="KEYDIR", help="folder for the keys")
    p.add_argument("--client", default="client", help="name of the client key pair")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.protocol.curve import generate_keys

    keys = generate_keys(args.out, client_name=args.client)
    print(f"publisher secret key: {keys.server_secret} (keep it on this workstation)")
    print(f"publisher public key: {keys.server_public} (give it to each display)")
    print(f"client key pair:      {keys.client_public}, {keys.client_secret}")
    print(f"authorised clients:   {keys.authorized_dir}/")
    return 0
