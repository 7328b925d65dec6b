"""JWKS and access-token helper for the authenticated benchmark (bench/run_auth.sh).

  jwt_tool.py jwks  KEY.pem KID             -> JWKS JSON (the RSA public key, use=sig, alg=RS256)
  jwt_tool.py token KEY.pem KID ISS AUD SCOPE [--ttl SECONDS] [--typ at+jwt]
                                           -> an RS256 JWT (RFC 9068 shape) on stdout

KEY.pem is the RSA private key made by `openssl genpkey` at run time.
"""

import argparse
import base64
import json
import time
import uuid

import jwt  # PyJWT
from cryptography.hazmat.primitives import serialization


def b64u_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_key(path: str):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("jwks")
    j.add_argument("key")
    j.add_argument("kid")
    t = sub.add_parser("token")
    t.add_argument("key")
    t.add_argument("kid")
    t.add_argument("iss")
    t.add_argument("aud")
    t.add_argument("scope")
    t.add_argument("--ttl", type=int, default=3600)
    t.add_argument("--typ", default="at+jwt")
    a = ap.parse_args()

    key = load_key(a.key)
    if a.cmd == "jwks":
        pub = key.public_key().public_numbers()
        print(json.dumps({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": a.kid,
            "n": b64u_uint(pub.n), "e": b64u_uint(pub.e),
        }]}))
        return
    now = int(time.time())
    claims = {
        "iss": a.iss, "sub": "bench-user", "aud": a.aud, "client_id": "bench-client",
        "scope": a.scope, "iat": now, "nbf": now - 5, "exp": now + a.ttl, "jti": str(uuid.uuid4()),
    }
    print(jwt.encode(claims, key, algorithm="RS256", headers={"kid": a.kid, "typ": a.typ}))


if __name__ == "__main__":
    main()
