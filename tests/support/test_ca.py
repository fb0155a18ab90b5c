"""A throw-away certificate authority for TLS tests (``cryptography`` package).

Nothing here is a test; the module is named ``test_ca`` only because that is
what it is.  Typical use::

    ca = CertAuthority(tmp_path / "ca")
    server = ca.issue()                      # for 127.0.0.1 and localhost
    ctx = ca.client_context()                # trusts exactly this CA
    wrong = ca.issue(hosts=("xcp.example",)) # valid chain, wrong name
    old = ca.issue(expired=True)             # valid chain, expired
    alone = self_signed(tmp_path / "ss")     # a host's own self-signed cert (XCP-ng default)

Keys are EC P-256 (fast to generate).  Certificates carry the extensions a
strict verifier (Python 3.13's ``VERIFY_X509_STRICT``) wants: basic
constraints, key usage, extended key usage, subject/authority key ids and a
subjectAltName with DNS names and IP addresses.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fruix-dagster tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for h in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            entries.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(entries)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _leaf_extensions(builder: x509.CertificateBuilder, key, hosts, *, self_signed: bool) -> x509.CertificateBuilder:
    return (builder
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         key_cert_sign=self_signed, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(_san(hosts), critical=False))


@dataclass(frozen=True)
class IssuedCert:
    """A server certificate and its key, both as PEM files."""

    cert_file: Path
    key_file: Path
    cert: x509.Certificate

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts (pins) exactly this certificate."""
        return ssl.create_default_context(cafile=str(self.cert_file))


class CertAuthority:
    """A CA whose certificate is written to ``directory/ca.pem`` (:attr:`ca_file`)."""

    def __init__(self, directory: str | os.PathLike, name: str = "fruix test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        subject = _name(name)
        self.cert = (x509.CertificateBuilder()
                     .subject_name(subject).issuer_name(subject)
                     .public_key(self._key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - _dt.timedelta(days=1))
                     .not_valid_after(now + _dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False,
                                                  key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                                    critical=False)
                     .sign(self._key, hashes.SHA256()))
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._issued = 0

    def issue(self, hosts: Iterable[str] = DEFAULT_HOSTS, *, name: str | None = None,
              expired: bool = False, stem: str | None = None) -> IssuedCert:
        """Issue a server certificate for ``hosts`` (IPs and DNS names)."""
        hosts = tuple(hosts)
        self._issued += 1
        stem = stem or f"server-{self._issued}"
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        if expired:
            start, end = now - _dt.timedelta(days=30), now - _dt.timedelta(days=1)
        else:
            start, end = now - _dt.timedelta(days=1), now + _dt.timedelta(days=30)
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(name or hosts[0])).issuer_name(self.cert.subject)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end))
        builder = _leaf_extensions(builder, key, hosts, self_signed=False).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_file, key_file = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key)
        return IssuedCert(cert_file, key_file, cert)

    def client_context(self) -> ssl.SSLContext:
        """A client context (hostname checking on) that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def self_signed(directory: str | os.PathLike, hosts: Iterable[str] = DEFAULT_HOSTS, *,
                name: str | None = None, stem: str = "self-signed") -> IssuedCert:
    """A self-signed server certificate, like the one an XCP-ng host makes for itself."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hosts = tuple(hosts)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    subject = _name(name or hosts[0])
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(days=1))
               .not_valid_after(now + _dt.timedelta(days=30)))
    cert = _leaf_extensions(builder, key, hosts, self_signed=True).sign(key, hashes.SHA256())
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_file, key)
    return IssuedCert(cert_file, key_file, cert)
