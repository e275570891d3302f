"""``usnav keys``: ZeroMQ CURVE keys for publishing margins beyond loopback."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="create ZeroMQ CURVE keys (needed to publish beyond 127.0.0.1)",
        description="Creates a publisher key pair and one display-client key pair, and "
        "authorises that client. Give server.key and client.key_secret to the display machine. "
        "KEYDIR is created when missing; existing keys are kept unless --force.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="KEYDIR", help="folder for the keys")
    p.add_argument(
        "--client",
        default="client",
        help="name of the client key pair (letters, digits, _ - .; default client)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace keys of the same names already in KEYDIR"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.io.outputs import check_output
    from usnav.protocol.curve import check_client_name, generate_keys

    check_client_name(args.client)
    check_output(args.out, folder=True, force=True)  # a folder of other keys is fine
    names = [f"{stem}{ext}" for stem in ("server", args.client) for ext in (".key", ".key_secret")]
    existing = [args.out / n for n in names if (args.out / n).exists()]
    if existing and not args.force:
        from usnav.errors import InputError
        from usnav.io.outputs import FORCE_HINT

        raise InputError(existing[0], "already exists", FORCE_HINT)
    for old in [*existing, args.out / "authorized" / f"{args.client}.key"]:
        if args.force and old.exists():
            old.unlink()
    keys = generate_keys(args.out, client_name=args.client)
    print(f"publisher secret key: {keys.server_secret} (keep it on this workstation)")
    print(f"publisher public key: {keys.server_public} (give it to each display)")
    print(f"client key pair:      {keys.client_public}, {keys.client_secret}")
    print(f"authorised clients:   {keys.authorized_dir}/")
    return 0
