"""Throwaway X.509 material for the gRPC TLS tests: a CA, a server certificate for localhost / 127.0.0.1 and a
client certificate, all signed by that CA, written as PEM files."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.db import connections

from controllers.grpc.server import GrpcServer, ServerTls, build_server
from controllers.heartbeats import RECORDERS
from tests.beats import recorder_reset


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def read(self, name: str) -> bytes:
        return getattr(self, name).read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls_files(folder: Path) -> TlsFiles:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("darktower test CA")).issuer_name(_name("darktower test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, usage: x509.ObjectIdentifier,
             names: list[x509.GeneralName] | None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                              [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = leaf("mc-fleet-test", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    files = TlsFiles(ca=folder / "ca.pem", server_cert=folder / "server.pem", server_key=folder / "server.key",
                     client_cert=folder / "client.pem", client_key=folder / "client.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(_key_pem(server_key))
    files.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    files.client_key.write_bytes(_key_pem(client_key))
    return files


@contextlib.contextmanager
def tls_grpc_server(tls: ServerTls | None) -> Iterator[GrpcServer]:
    """The real server on a free loopback port over `tls`, as tests/controllers/grpc/conftest.py's grpc_server
    starts it (use with transactional_db)."""
    db_settings = connections.settings["default"]
    saved_max_age = db_settings["CONN_MAX_AGE"]
    db_settings["CONN_MAX_AGE"] = 0  # worker threads close their connection after every call
    server = build_server(bind="127.0.0.1:0", workers=2, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1)
        for recorder in RECORDERS:
            recorder_reset(recorder)
        db_settings["CONN_MAX_AGE"] = saved_max_age
