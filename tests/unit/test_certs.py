"""module_utils.certs: the tenant's CA, transport and HTTP certificates, and Kibana's service token."""

import base64
import hashlib
import re

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from ansible_collections.yunpeng.es_serverless.plugins.module_utils import certs
from tests.es_tokens import es_parse_token, es_verify_hash

NS = "es-test"


@pytest.fixture(scope="module")
def material():
    return certs.bundle(NS)


def _cert(pem):
    return x509.load_pem_x509_certificate(pem.encode())


def _key(pem):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _ext(cert, oid):
    return cert.extensions.get_extension_for_oid(oid)


def test_the_secret_holds_every_key_in_pem(material):
    assert sorted(material) == sorted(certs.SECRET_KEYS)
    for name in (certs.CA_KEY, certs.TRANSPORT_KEY, certs.HTTP_KEY):
        # Unencrypted PKCS#8, which Elasticsearch's PEM reader and Node.js read; ECDSA P-256.
        assert material[name].startswith("-----BEGIN PRIVATE KEY-----\n")
        assert isinstance(_key(material[name]).curve, ec.SECP256R1)


def test_the_ca_is_a_ca_and_only_signs(material):
    ca = _cert(material[certs.CA_CERT])
    assert ca.issuer == ca.subject
    constraints = _ext(ca, ExtensionOID.BASIC_CONSTRAINTS)
    assert constraints.critical and constraints.value.ca is True
    usage = _ext(ca, ExtensionOID.KEY_USAGE).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    ca.verify_directly_issued_by(ca)
    # The CA certificate is the CA key's public half.
    assert ca.public_key() == _key(material[certs.CA_KEY]).public_key()


@pytest.mark.parametrize("cert_key, key_key, client", [
    (certs.TRANSPORT_CERT, certs.TRANSPORT_KEY, True),
    (certs.HTTP_CERT, certs.HTTP_KEY, False),
])
def test_leaf_certificates_chain_to_the_ca_and_name_every_service_and_pod(material, cert_key, key_key, client):
    ca = _cert(material[certs.CA_CERT])
    cert = _cert(material[cert_key])
    cert.verify_directly_issued_by(ca)  # signature and issuer name
    assert cert.public_key() == _key(material[key_key]).public_key()
    assert _ext(cert, ExtensionOID.BASIC_CONSTRAINTS).value.ca is False
    usage = _ext(cert, ExtensionOID.KEY_USAGE).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = list(_ext(cert, ExtensionOID.EXTENDED_KEY_USAGE).value)
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert (ExtendedKeyUsageOID.CLIENT_AUTH in eku) is client
    names = set(_ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value.get_values_for_type(x509.DNSName))
    for service in ("elasticsearch", "elasticsearch-headless"):
        full = service + ".es-test"
        assert {service, full, full + ".svc", full + ".svc.cluster.local"} <= names
    # Any pod of the StatefulSet, whatever the replica count.
    assert {"*.elasticsearch-headless.es-test.svc", "*.elasticsearch-headless.es-test.svc.cluster.local"} <= names
    assert cert.not_valid_after_utc > ca.not_valid_before_utc
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc


def test_a_certificate_from_another_tenant_does_not_chain(material):
    other = certs.bundle("es-other")
    with pytest.raises((ValueError, InvalidSignature)):  # another issuer name, another key
        _cert(other[certs.TRANSPORT_CERT]).verify_directly_issued_by(_cert(material[certs.CA_CERT]))
    assert other[certs.CA_CERT] != material[certs.CA_CERT]


def test_the_published_ca_certificate_carries_no_key(material):
    assert "PRIVATE KEY" not in material[certs.CA_CERT]
    assert material[certs.CA_CERT].count("-----BEGIN CERTIFICATE-----") == 1


# ------------------------------------------------------------------ the service token, checked as Elasticsearch does
def test_kibana_token_verifies_against_the_service_tokens_line(material):
    account, name, secret = es_parse_token(material[certs.KIBANA_TOKEN])
    assert account == "elastic/kibana" and name == certs.TOKEN_NAME
    assert re.match(r"^[a-zA-Z0-9-][a-zA-Z0-9_-]{0,255}$", name)  # Elasticsearch's token name rule
    assert len(secret) >= 10
    line = material[certs.SERVICE_TOKENS]
    assert line.endswith("\n") and line.count("\n") == 1
    qualified, stored = line.rstrip("\n").split(":", 1)
    assert qualified == "elastic/kibana/" + name
    assert es_verify_hash(secret, stored)
    assert not es_verify_hash(secret + "x", stored)
    assert stored.startswith("{PBKDF2_STRETCH}10000$")


def test_the_hash_matches_a_known_vector():
    # Computed independently of the module (Python's hashlib, the steps of Hasher.PBKDF2_STRETCH).
    salt = bytes(range(32))
    stored = certs.service_token_hash("secret", salt=salt, iterations=1000)
    data = hashlib.sha512(b"secret").hexdigest().encode()
    expected = base64.b64encode(hashlib.pbkdf2_hmac("sha512", data, salt, 1000, 32)).decode()
    assert stored == "{PBKDF2_STRETCH}1000$%s$%s" % (base64.b64encode(salt).decode(), expected)
    assert es_verify_hash("secret", stored)


def test_each_bundle_is_new(material):
    again = certs.bundle(NS)
    assert again[certs.CA_KEY] != material[certs.CA_KEY]
    assert again[certs.KIBANA_TOKEN] != material[certs.KIBANA_TOKEN]


def test_signatures_use_sha256(material):
    for name in (certs.CA_CERT, certs.TRANSPORT_CERT, certs.HTTP_CERT):
        assert isinstance(_cert(material[name]).signature_hash_algorithm, hashes.SHA256)
