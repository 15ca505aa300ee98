"""TLS certificates for the SuperLink and key pairs for SuperNode authentication.

:func:`make_certs` writes a private CA (``ca.crt``, ``ca.key``) and a server
certificate signed by it (``server.pem``, ``server.key``) whose subject
alternative names are the SuperLink's host names / IP addresses. SuperNodes and
the ``flwr`` CLI trust ``ca.crt``; ``ca.key`` signs nothing else and should be
kept offline. :func:`make_node_key` writes an ECDSA (P-384) key pair in OpenSSH
format for one SuperNode (``--auth-supernode-private-key``); its public half is
registered on the SuperLink with ``flwr supernode register``.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILES = ("ca.crt", "ca.key", "server.pem", "server.key")


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write a file readable by its owner only when ``private`` (created with that mode: never world-readable)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600 if private else 0o644)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _refuse_overwrite(paths: list[Path], overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass overwrite to replace it")


def make_certs(out_dir: str | Path, hosts: list[str], days: int = 365, overwrite: bool = False) -> dict[str, Path]:
    """Write ca.crt/ca.key and a server certificate (server.pem/server.key) valid for ``hosts``."""
    if not hosts:
        raise ValueError("give at least one host name or IP address the SuperLink is reached at")
    if days < 1:
        raise ValueError("days must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in CERT_FILES}
    _refuse_overwrite(list(paths.values()), overwrite)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmm federation CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(ca_ski, critical=False)
               .sign(ca_key, hashes.SHA384()))

    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA384()))

    _write(paths["ca.key"], _pem_key(ca_key), private=True)
    _write(paths["server.key"], _pem_key(key), private=True)
    _write(paths["ca.crt"], ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _write(paths["server.pem"], cert.public_bytes(serialization.Encoding.PEM), private=False)
    return paths


def make_node_key(path: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a SuperNode authentication key pair: ``path`` (private, OpenSSH) and ``path.pub``."""
    private = Path(path)
    public = private.with_name(private.name + ".pub")
    private.parent.mkdir(parents=True, exist_ok=True)
    _refuse_overwrite([private, public], overwrite)
    key = ec.generate_private_key(ec.SECP384R1())
    _write(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption()), private=True)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(public, pub + b"\n", private=False)
    return private, public
