"""Certificates generated per test run (with ``cryptography``, installed into the package venv
by scripts/setup-python-pkg.sh): a CA, a server certificate for ``localhost`` / ``127.0.0.1``,
a client certificate, and a second, unrelated CA with its own client certificate."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError as e:  # a missing tool fails loudly, never skips
    raise ImportError(
        "the TLS tests need the 'cryptography' package: run bash scripts/setup-python-pkg.sh"
    ) from e


def _name(cn: str, org: str = "veltix-rs tests") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
    ])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class _Ca:
    def __init__(self, cn: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(cn)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, subject: x509.Name, *, server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return b.sign(self.key, hashes.SHA256()), key


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PEM files."""

    ca: Path              #: the CA that issued server_cert and client_cert
    server_cert: Path     #: CN=localhost, SAN localhost + 127.0.0.1
    server_key: Path
    client_cert: Path     #: CN=sensor-17, O=Acme
    client_key: Path
    other_ca: Path        #: an unrelated CA
    other_client_cert: Path  #: CN=intruder, issued by other_ca
    other_client_key: Path


def make_pki(d: Path) -> Pki:
    """Generate everything into directory ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    ca, other = _Ca("veltix-rs test CA"), _Ca("some other CA")
    _write_cert(ca.cert, d / "ca.pem")
    _write_cert(other.cert, d / "other-ca.pem")
    for name, issuer, subject, server in (
        ("server", ca, _name("localhost"), True),
        ("client", ca, _name("sensor-17", "Acme"), False),
        ("other-client", other, _name("intruder"), False),
    ):
        cert, key = issuer.issue(subject, server=server)
        _write_cert(cert, d / f"{name}.pem")
        _write_key(key, d / f"{name}.key")
    return Pki(
        ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
        client_cert=d / "client.pem", client_key=d / "client.key", other_ca=d / "other-ca.pem",
        other_client_cert=d / "other-client.pem", other_client_key=d / "other-client.key",
    )
