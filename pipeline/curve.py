"""CURVE on the bus's tcp endpoints: key files, the server and client sides, and the exposure rule.

ZeroMQ's CURVE (libzmq; pyzmq's ``zmq.auth`` writes and reads the certificate files and runs the
ZAP authenticator) encrypts a tcp connection and lets in only clients whose public key the server
knows.  Nothing here is hand-written cryptography: this module only wires files to socket options.

- `pipeline keys generate DIR` (``generate``) writes ``server.key`` / ``server.key_secret`` and
  ``client.key`` / ``client.key_secret``, and copies ``client.key`` into ``DIR/clients/``: the
  directory ``[bus] curve_clients_dir`` names (the authenticator allows every public key in it).
- The ingest (``ServerCurve``) sets the CURVE server options on its sockets just before binding
  their tcp endpoints; the ipc endpoints in the run_dir, bound first, stay plain (same host,
  guarded by the run_dir's permissions).  libzmq applies options to the binds that follow them.
- A consumer on another host (``ClientKeys``) sets its key pair and the server's public key.
- ``check_exposure``: a tcp endpoint bound beyond loopback without CURVE is refused unless
  ``[bus] insecure = true`` (anyone reaching the port would read the stream).
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from pipeline.config import Config, ExchangeConfig
from pipeline.errors import ConfigError


def generate(directory: Path, clients: tuple[str, ...] = ("client",)) -> list[Path]:
    """Write a server key pair and one key pair per client name into ``directory``; each client's
    public key also goes to ``directory/clients/`` (the allowed keys).  Returns the files written.

    Existing files are not overwritten (FileExistsError): a new server key would lock out every
    client that has the old public key."""
    directory.mkdir(parents=True, exist_ok=True)
    allowed = directory / "clients"
    allowed.mkdir(exist_ok=True)
    names = ("server", *clients)
    for name in names:
        for suffix in (".key", ".key_secret"):
            if (directory / f"{name}{suffix}").exists():
                raise FileExistsError(f"{directory / (name + suffix)} exists: remove it first, or use another directory")
    written = []
    for name in names:
        public, secret = zmq.auth.create_certificates(str(directory), name)
        Path(secret).chmod(0o600)
        written += [Path(public), Path(secret)]
        if name != "server":
            written.append(Path(shutil.copy(public, allowed / f"{name}.key")))
    return written


@dataclass(frozen=True)
class ClientKeys:
    """A consumer's CURVE key pair and the server's public key (z85 bytes)."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(cls, secret_file: str | Path, server_public_file: str | Path) -> "ClientKeys":
        """From the files `pipeline keys generate` wrote: ``client.key_secret`` and ``server.key``."""
        public, secret = zmq.auth.load_certificate(str(secret_file))
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key (give the .key_secret file)")
        server_public, _ = zmq.auth.load_certificate(str(server_public_file))
        return cls(public, secret, server_public)

    @classmethod
    def from_config(cls, config: Config) -> "ClientKeys | None":
        """The ``[bus]`` client key pair of this host's config, or None when it names none."""
        b = config.bus
        if b.curve_client_secret_key is None or b.curve_server_public_key is None:
            return None
        return cls.load(b.curve_client_secret_key, b.curve_server_public_key)

    def apply(self, sock: zmq.Socket) -> None:
        """Set the client options; call before ``connect``."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server_public


class ServerCurve:
    """The server side for one ZeroMQ context: the ZAP authenticator (a thread of pyzmq's, which
    only works when a client connects) and the options each tcp-bound socket gets."""

    def __init__(self, ctx: zmq.Context, secret_file: Path, clients_dir: Path):
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.auth.load_certificate(str(secret_file))
        if secret is None:
            raise ValueError(f"{secret_file} holds no secret key (give the .key_secret file)")
        self.public, self.secret = public, secret
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(clients_dir))

    @classmethod
    def from_config(cls, ctx: zmq.Context, config: Config) -> "ServerCurve | None":
        b = config.bus
        if b.curve_secret_key is None or b.curve_clients_dir is None:
            return None
        return cls(ctx, b.curve_secret_key, b.curve_clients_dir)

    def apply(self, sock: zmq.Socket) -> None:
        """Set the server options; the binds that follow use CURVE."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def stop(self) -> None:
        self.auth.stop()


def loopback(endpoint: str) -> bool:
    """Whether a tcp endpoint binds only loopback (ipc endpoints count as local too)."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: beyond loopback
        return False


def tcp_endpoints(ex: ExchangeConfig) -> list[tuple[str, str]]:
    """(config key, endpoint) of each tcp endpoint an exchange's ingest binds."""
    return [(key, ep) for key in ("trades_endpoint", "l2_endpoint", "snapshot_endpoint")
            if (ep := getattr(ex, key)) is not None and ep.startswith("tcp://")]


def check_exposure(config: Config, ex: ExchangeConfig) -> None:
    """ConfigError (one line, naming the key) when the exchange binds a tcp endpoint beyond
    loopback without CURVE and ``[bus] insecure`` is not set."""
    if config.bus.curve or config.bus.insecure:
        return
    for key, ep in tcp_endpoints(ex):
        if not loopback(ep):
            raise ConfigError(f"exchanges.{ex.name}.{key}",
                              f"{ep} binds beyond loopback without CURVE, so anyone who reaches the port reads "
                              "the stream; set [bus] curve_secret_key and curve_clients_dir (`pipeline keys "
                              "generate`), or [bus] insecure = true")
