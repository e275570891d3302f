"""ZeroMQ CURVE security for publishing beyond loopback (``usnav keys``).

On loopback no encryption is needed: only this machine can connect. To publish on a network
interface, the publisher must use CURVE (encryption + authentication): it has a key pair, and
only clients whose public keys are in its ``authorized`` folder may subscribe. Keys are
ZeroMQ certificate files (plain text, ``zmq.auth`` format) — nothing is deserialised as code.

Layout made by :func:`generate_keys`::

    KEYDIR/server.key          public key of the publisher (give it to every display)
    KEYDIR/server.key_secret   its secret key (0600; stays on the usnav workstation)
    KEYDIR/client.key          public key of a display client
    KEYDIR/client.key_secret   its secret key (copy to the display machine)
    KEYDIR/authorized/client.key   public keys the publisher accepts
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import zmq
import zmq.auth

from usnav.errors import InputError


@dataclass(frozen=True)
class KeyFiles:
    """Paths written by :func:`generate_keys`."""

    server_public: Path
    server_secret: Path
    client_public: Path
    client_secret: Path
    authorized_dir: Path


#: a client key name: a plain file stem (no folder, no hidden file, no "..")
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_client_name(name: str) -> str:
    """Refuse a client key name that is not a plain file stem.

    The name becomes ``KEYDIR/NAME.key`` and ``KEYDIR/NAME.key_secret``: a name with a path
    separator or ``..`` would write keys outside KEYDIR, an empty one hidden ``.key`` files.

    Raises
    ------
    InputError
        Not letters, digits, ``_``, ``-`` or ``.`` (starting with a letter or digit, at most
        64), contains ``..``, or is ``server`` (the publisher's own pair).
    """
    if not CLIENT_NAME.fullmatch(name or "") or ".." in name or name == "server":
        raise InputError(
            "--client",
            f"{name!r} is not a plain key name",
            "use letters, digits, _ - . (e.g. display1); no folders, not 'server'",
        )
    return name


def generate_keys(key_dir: str | Path, *, client_name: str = "client") -> KeyFiles:
    """Create a publisher key pair, one client key pair, and authorise that client.

    Existing keys are never overwritten (raises InputError): rotate keys on purpose, by
    deleting them first.
    """
    if not zmq.has("curve"):
        raise InputError(
            "libzmq",
            "this ZeroMQ build has no CURVE support",
            "install pyzmq from its wheels (they bundle libsodium)",
        )
    check_client_name(client_name)
    d = Path(key_dir)
    if d.exists() and not d.is_dir():
        raise InputError(d, "is a file, expected a folder for the keys")
    d.mkdir(parents=True, exist_ok=True)
    for stem in ("server", client_name):
        if (d / f"{stem}.key_secret").exists():
            raise InputError(
                d / f"{stem}.key_secret",
                "already exists",
                "delete the old keys first if you mean to replace them",
            )
    # made in a private folder (mkdtemp: 0700) and made 0600 there, then moved in: written
    # straight into ``d`` under the default umask, the secrets were readable by others until
    # the chmod (session 36)
    with tempfile.TemporaryDirectory(dir=d, prefix=".keys-") as private:
        made = [zmq.auth.create_certificates(private, stem) for stem in ("server", client_name)]
        for _, secret in made:
            os.chmod(secret, 0o600)
        for path in (f for pair in made for f in pair):
            shutil.move(path, d / Path(path).name)
    server_pub, server_sec, client_pub, client_sec = (
        str(d / Path(f).name) for pair in made for f in pair
    )
    authorized = d / "authorized"
    authorized.mkdir(exist_ok=True)
    shutil.copy(client_pub, authorized / Path(client_pub).name)
    return KeyFiles(
        Path(server_pub), Path(server_sec), Path(client_pub), Path(client_sec), authorized
    )


def load_secret(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``*.key_secret`` certificate file."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such key file", "create keys with: usnav keys --out KEYDIR")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (ValueError, OSError) as exc:
        raise InputError(p, f"not a ZeroMQ certificate: {exc}") from exc
    if secret is None:
        raise InputError(p, "has no secret key", "use the .key_secret file, not the .key file")
    return public, secret


def load_public(path: str | Path) -> bytes:
    """The public key from a ``*.key`` (or ``*.key_secret``) certificate file."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such key file")
    try:
        public, _ = zmq.auth.load_certificate(str(p))
    except (ValueError, OSError) as exc:
        raise InputError(p, f"not a ZeroMQ certificate: {exc}") from exc
    return public


def is_loopback_endpoint(address: str) -> bool:
    """True for ``tcp://127.x.x.x:port``, ``tcp://localhost:port``, ``ipc://`` and ``inproc://``."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    host = urlparse(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def interface_name(address: str) -> str | None:
    """The network interface a ``tcp://NAME:port`` bind names (``lo``, ``eth0``), else None.

    ZeroMQ binds such an endpoint to an address the interface has when it binds; which one is
    up to the machine's configuration (``lo`` may carry addresses beyond 127.0.0.0/8), so
    :func:`is_loopback_endpoint` never takes a name other than ``localhost`` for loopback.
    """
    if not address.startswith("tcp://"):
        return None
    host = urlparse(address).hostname or ""
    if host in ("", "*", "localhost") or ";" in host:  # ';': ZeroMQ's source;destination
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def loopback_endpoint_like(address: str) -> str:
    """``tcp://127.0.0.1:<the same port>``: what to write to keep ``address`` on this machine."""
    port = address.rpartition(":")[2] if address.startswith("tcp://") else ""
    return f"tcp://127.0.0.1:{port if port and '/' not in port else 'PORT'}"


def is_ipv6_endpoint(address: str) -> bool:
    """True for a ``tcp://[v6 address]:port`` endpoint (ZeroMQ needs its IPV6 option then)."""
    if not address.startswith("tcp://"):
        return False
    return ":" in (urlparse(address).hostname or "")


def secure_server_socket(
    socket: zmq.Socket, secret_key_file: str | Path, authorized_dir: str | Path | None = None
) -> zmq.auth.thread.ThreadAuthenticator:
    """Make ``socket`` a CURVE server that only accepts clients in ``authorized_dir``.

    Must be called before bind. Returns the authenticator thread (stop it when closing).
    """
    from zmq.auth.thread import ThreadAuthenticator

    public, secret = load_secret(secret_key_file)
    auth_dir = (
        Path(authorized_dir) if authorized_dir else Path(secret_key_file).parent / "authorized"
    )
    if not auth_dir.is_dir():
        raise InputError(
            auth_dir,
            "no folder of authorised client keys",
            "usnav keys creates KEYDIR/authorized; copy client .key files there",
        )
    auth = ThreadAuthenticator(socket.context)
    auth.start()
    auth.configure_curve(domain="*", location=str(auth_dir))
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return auth


def secure_client_socket(
    socket: zmq.Socket, server_public_file: str | Path, client_secret_file: str | Path
) -> None:
    """Make ``socket`` a CURVE client of the publisher whose public key is given."""
    public, secret = load_secret(client_secret_file)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = load_public(server_public_file)
