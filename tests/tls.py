"""Real TLS for the Kafka tests: a throwaway certificate authority and a TLS terminator.

tansu 0.6.0 (the test broker) cannot serve TLS itself: its ``--cert`` and ``--key`` options
are mutually exclusive in that release, so no listener can be given both (tansu issue #358).
The terminator stands where a TLS listener, stunnel or a cloud ingress would: it accepts TLS
with a certificate signed by the test CA and forwards the decrypted Kafka protocol to the real
broker on loopback. The broker advertises the terminator's port, so every connection a client
makes (bootstrap and after metadata) goes through TLS.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TestPKI:
    ca: Path  # the CA certificate clients trust
    other_ca: Path  # a CA that did not sign the server certificate
    server_cert: Path
    server_key: Path


def make_pki(folder: Path, *, host: str = "127.0.0.1") -> TestPKI:
    """A CA, a second unrelated CA, and a server certificate for ``host`` signed by the first."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def write(name: str, key, cert) -> tuple[Path, Path]:
        key_path, cert_path = folder / f"{name}.key", folder / f"{name}.pem"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    def authority(name: str):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"yuqing test {name}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = authority("ca")
    ca_path, _ = write("ca", ca_key, ca_cert)
    other_path, _ = write("other-ca", *authority("other ca"))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = write("server", server_key, server_cert)
    return TestPKI(ca=ca_path, other_ca=other_path, server_cert=cert_path, server_key=key_path)


@dataclass
class TLSTerminator:
    """Accept TLS on ``host:port`` and forward the plaintext to ``upstream`` (threads)."""

    upstream: tuple[str, int]
    certfile: Path
    keyfile: Path
    host: str = "127.0.0.1"
    port: int = 0
    handshakes: int = 0  # TLS handshakes completed
    refused: list[str] = field(default_factory=list)  # handshakes that failed, and why
    _listener: socket.socket | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def start(self) -> TLSTerminator:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certfile, self.keyfile)
        self._context = context
        listener = socket.create_server((self.host, self.port))
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, name="tls-terminator", daemon=True).start()
        return self

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            client = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self._lock:
                self.refused.append(" ".join(str(e).split()))
            raw.close()
            return
        client.settimeout(None)
        with self._lock:
            self.handshakes += 1
        try:
            broker = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        broker.settimeout(None)
        threading.Thread(target=_pipe, args=(broker, client), daemon=True).start()
        _pipe(client, broker)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def __enter__(self) -> TLSTerminator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes from ``source`` to ``target`` until either side closes; then close both."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
