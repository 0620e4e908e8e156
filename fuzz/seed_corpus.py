#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets from tests/data/twilio_tokens.json.

    python3 fuzz/seed_corpus.py        # from the repository root (or anywhere)

parse/:  each vector's token text, plus hand-made tokens right at and over the 16 KiB limit.
verify/: [secret length][secret][now, 8 bytes LE][mode][token] for each vector, mode 0 (as is) and
         mode 1 (the target re-signs the token, so the time rules are reached).
roundtrip/ needs no seeds (its input is `arbitrary` bytes).
The corpora are gitignored: run this again on a fresh checkout.
"""
import base64, hashlib, hmac, json, os, struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(header: dict, claims: dict, secret: bytes) -> str:
    signed = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64(json.dumps(claims, separators=(",", ":")).encode())
    return signed + "." + b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())


def write(target: str, name: str, data: bytes) -> None:
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def verify_input(secret: bytes, now: int, mode: int, token: str) -> bytes:
    return bytes([len(secret)]) + secret + struct.pack("<Q", now) + bytes([mode]) + token.encode()


def exact_length_token(meta, header, secret, now, target_len):
    """A valid token of exactly target_len chars: pad the identity, and the region to shift the
    header's base64 length (a segment's length is never 1 mod 4)."""
    for region_len in range(0, 8):
        h = dict(header, twr="r" * region_len) if region_len else header
        for pad in range(target_len):
            claims = {"jti": f"{meta['api_key_sid']}-{now}", "grants": {"identity": "x" * pad},
                      "iat": now, "exp": now + 3600, "iss": meta["api_key_sid"], "sub": meta["account_sid"]}
            tok = mint(h, claims, secret)
            if len(tok) == target_len:
                return tok
            if len(tok) > target_len:
                break
    raise SystemExit(f"no token of length {target_len}")


def main() -> None:
    with open(os.path.join(ROOT, "tests", "data", "twilio_tokens.json")) as f:
        data = json.load(f)
    meta = data["meta"]
    n = 0
    for v in data["valid"] + data["invalid"]:
        token, secret, now = v["token"], v.get("secret", meta["secret"]).encode(), v.get("now", meta["now"])
        write("parse", v["name"], token.encode())
        for mode in (0, 1):
            write("verify", f"{v['name']}-{mode}", verify_input(secret, now, mode, token))
        n += 1

    # Tokens of exactly MAX_TOKEN_LEN (16 KiB) and one byte over, padded through the identity.
    secret, now = meta["secret"].encode(), meta["now"]
    header = {"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"}
    for target_len in (16 * 1024, 16 * 1024 + 1):
        tok = exact_length_token(meta, header, secret, now, target_len)
        write("parse", f"len-{len(tok)}", tok.encode())
        write("verify", f"len-{len(tok)}-1", verify_input(secret, now, 1, tok))
    print(f"wrote seeds for {n} vectors and the 16 KiB boundary into {OUT}")


if __name__ == "__main__":
    main()
