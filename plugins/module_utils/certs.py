# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tenant cluster's TLS material and Kibana's service-account token, made once per tenant.

One CA per tenant signs a transport certificate (node to node, used as server
and client) and an HTTP certificate. Both name the Services ``elasticsearch``
and ``elasticsearch-headless`` and every pod behind the headless Service
(``*.elasticsearch-headless.<ns>.svc``), so any replica count works without
reissuing. Keys are ECDSA P-256 in unencrypted PKCS#8 PEM, which
Elasticsearch's PEM reader and Node.js (Kibana) accept and which takes
milliseconds to generate.

Kibana authenticates as the service account ``elastic/kibana`` with a token
that Elasticsearch checks against its file-based store (``service_tokens`` in
its config directory): one line ``elastic/kibana/<token name>:<hash>`` where the
hash is ``{PBKDF2_STRETCH}<iterations>$<salt b64>$<key b64>``, PBKDF2-HMAC-SHA512
over the hex SHA-512 of the secret (the format ECK writes and Elasticsearch's
``Hasher.PBKDF2_STRETCH`` verifies). The bearer token is the base64 of the bytes
``00 01 00 01`` followed by ``elastic/kibana/<token name>:<secret>``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

import base64
import datetime
import hashlib
import os
import secrets
import string

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the environment
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = str(_exc)

# Services of the tenant cluster the certificates name (resources.yml.j2 renders them).
SERVICES = ("elasticsearch", "elasticsearch-headless")
HEADLESS_SERVICE = "elasticsearch-headless"
CLUSTER_DOMAIN = "cluster.local"

CA_VALIDITY = datetime.timedelta(days=3650)
CERT_VALIDITY = datetime.timedelta(days=1825)
BACKDATE = datetime.timedelta(minutes=5)

# Keys of the Secret (one Secret, so the CA, the certificates and the token hash
# are created together or not at all).
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TRANSPORT_CERT = "transport.crt"
TRANSPORT_KEY = "transport.key"
HTTP_CERT = "http.crt"
HTTP_KEY = "http.key"
SERVICE_TOKENS = "service_tokens"
KIBANA_TOKEN = "kibana-token"
SECRET_KEYS = (CA_CERT, CA_KEY, TRANSPORT_CERT, TRANSPORT_KEY, HTTP_CERT, HTTP_KEY, SERVICE_TOKENS, KIBANA_TOKEN)

SERVICE_ACCOUNT = "elastic/kibana"
TOKEN_NAME = "es-serverless"
TOKEN_PREFIX = b"\x00\x01\x00\x01"
TOKEN_SECRET_LENGTH = 64
PBKDF2_STRETCH = "{PBKDF2_STRETCH}"
PBKDF2_ITERATIONS = 10000
PBKDF2_SALT_BYTES = 32
PBKDF2_KEY_BYTES = 32


class CertError(Exception):
    """The material cannot be made or read; the message never carries key material."""


def dns_names(namespace, cluster_domain=CLUSTER_DOMAIN):
    """Names the certificates cover: each Service short, with its namespace, ``.svc`` and the
    cluster domain, every pod of the headless Service, and ``localhost``."""
    names = []
    for service in SERVICES:
        names += [service, "%s.%s" % (service, namespace), "%s.%s.svc" % (service, namespace),
                  "%s.%s.svc.%s" % (service, namespace, cluster_domain)]
    names += ["*.%s.%s.svc" % (HEADLESS_SERVICE, namespace),
              "*.%s.%s.svc.%s" % (HEADLESS_SERVICE, namespace, cluster_domain), "localhost"]
    return names


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _builder(subject, issuer, public_key, validity):
    now = _now()
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + validity))


def _name(common_name, organisation):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(namespace):
    """A self-signed CA for one tenant: ``(cert, key)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("es-serverless %s CA" % namespace, "es-serverless")
    cert = (_builder(name, name, key.public_key(), CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert, ca_key, common_name, names, client=False):
    """A certificate signed by the CA for ``names``: ``(cert, key)``. ``client`` adds the
    clientAuth usage (transport: each node is also the client of the others)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    cert = (_builder(_name(common_name, "es-serverless"), ca_cert.subject, key.public_key(), CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def service_token_hash(secret, salt=None, iterations=PBKDF2_ITERATIONS):
    """``{PBKDF2_STRETCH}<iterations>$<salt>$<key>`` of a token secret, as Elasticsearch verifies it."""
    salt = os.urandom(PBKDF2_SALT_BYTES) if salt is None else salt
    stretched = hashlib.sha512(secret.encode("utf-8")).hexdigest().encode("ascii")
    derived = hashlib.pbkdf2_hmac("sha512", stretched, salt, iterations, PBKDF2_KEY_BYTES)
    return "%s%d$%s$%s" % (PBKDF2_STRETCH, iterations, base64.b64encode(salt).decode("ascii"),
                           base64.b64encode(derived).decode("ascii"))


def service_token(secret, account=SERVICE_ACCOUNT, name=TOKEN_NAME):
    """The bearer token a client (Kibana) sends for ``account/name`` with ``secret``."""
    return base64.b64encode(TOKEN_PREFIX + ("%s/%s:%s" % (account, name, secret)).encode("utf-8")).decode("ascii")


def service_tokens_line(secret, account=SERVICE_ACCOUNT, name=TOKEN_NAME):
    """One line of Elasticsearch's ``service_tokens`` file."""
    return "%s/%s:%s\n" % (account, name, service_token_hash(secret))


def bundle(namespace):
    """Everything the tenant's Secret holds, as text keyed by ``SECRET_KEYS``."""
    if not HAS_CRYPTOGRAPHY:
        raise CertError("the Python 'cryptography' library is required: %s" % CRYPTOGRAPHY_IMPORT_ERROR)
    ca_cert, ca_key = make_ca(namespace)
    names = dns_names(namespace)
    transport_cert, transport_key = issue(ca_cert, ca_key, "elasticsearch-transport.%s" % namespace, names,
                                          client=True)
    http_cert, http_key = issue(ca_cert, ca_key, "elasticsearch.%s.svc" % namespace, names)
    alphabet = string.ascii_letters + string.digits
    secret = "".join(secrets.choice(alphabet) for _i in range(TOKEN_SECRET_LENGTH))
    return {
        CA_CERT: _pem_cert(ca_cert), CA_KEY: _pem_key(ca_key),
        TRANSPORT_CERT: _pem_cert(transport_cert), TRANSPORT_KEY: _pem_key(transport_key),
        HTTP_CERT: _pem_cert(http_cert), HTTP_KEY: _pem_key(http_key),
        SERVICE_TOKENS: service_tokens_line(secret), KIBANA_TOKEN: service_token(secret),
    }
