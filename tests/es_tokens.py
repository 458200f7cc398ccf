"""Elasticsearch's own checks of a service-account token, written from its source (Hasher.PBKDF2_STRETCH,
ServiceAccountToken.fromBearerString), independent of the collection's code: the tests verify what
the collection writes the way Elasticsearch would."""

import base64
import hashlib
import hmac


def es_verify_hash(secret, stored):
    """Elasticsearch's Hasher.verifyHash for a PBKDF2_STRETCH hash, step by step: the prefix picks the
    hasher, the iteration count follows it, then ``$salt$key`` (base64); the data is the lower-case hex
    SHA-512 of the secret's UTF-8 bytes; PBKDF2WithHmacSHA512 with a key as long as the stored one."""
    prefix = "{PBKDF2_STRETCH}"
    assert stored.startswith(prefix)
    iterations, salt_b64, key_b64 = stored[len(prefix):].split("$")
    salt = base64.b64decode(salt_b64)
    assert len(salt) >= 8  # Elasticsearch refuses shorter salts
    key_bits = (len(key_b64) * 3) // 64 * 128
    data = hashlib.sha512(secret.encode("utf-8")).hexdigest().encode("utf-8")
    computed = hashlib.pbkdf2_hmac("sha512", data, salt, int(iterations), key_bits // 8)
    return hmac.compare_digest(base64.b64encode(computed).decode(), key_b64)


def es_parse_token(bearer):
    """Elasticsearch's ServiceAccountToken.fromBearerString: 00 01 00 01, then namespace/service/name:secret."""
    raw = base64.b64decode(bearer)
    assert raw[:4] == b"\x00\x01\x00\x01"
    qualified, secret = raw[4:].decode("utf-8").split(":", 1)
    namespace, service, name = qualified.split("/")
    return "%s/%s" % (namespace, service), name, secret
