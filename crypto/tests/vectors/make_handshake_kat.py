#!/usr/bin/env python3
"""Known-answer vector for weft's control handshake, computed with
independent implementations: the `noiseprotocol` package for Noise
NNpsk0_25519_ChaChaPoly_SHA256 and `argon2-cffi` for the password key.

    pip install noiseprotocol argon2-cffi
    python3 make_handshake_kat.py > handshake-kat.json

The hello layout and prologue are written out here from the format in
crypto/src/hello.rs and crypto/src/handshake.rs, not taken from the code.
"""
import json
import struct

from argon2.low_level import Type, hash_secret_raw
from noise.connection import Keypair, NoiseConnection

PASSWORD = b"correct horse"
PSK = hash_secret_raw(PASSWORD, b"weft network password v1", time_cost=2,
                      memory_cost=19456, parallelism=1, hash_len=32,
                      type=Type.ID, version=19)
E_INITIATOR = bytes(range(1, 33))
E_RESPONDER = bytes(range(101, 133))


NONCE_I = bytes(range(200, 216))
NONCE_R = bytes(range(216, 232))


def hello_frame_body(identity, nonce, min_version=1, max_version=1, encryption=True):
    # kind 1, then "weft", min, max, flags, nonce, identity length, identity
    return (bytes([1]) + b"weft" + struct.pack(">HHB", min_version, max_version,
            1 if encryption else 0) + nonce + struct.pack(">H", len(identity)) + identity)


# With a password the hellos carry no identity: each side's rides sealed
# in its Noise message.
IDENTITY_I = b"initiator-identity"
IDENTITY_R = b"responder-identity"
hello_i = hello_frame_body(b"", NONCE_I)
hello_r = hello_frame_body(b"", NONCE_R)
prologue = b"weft control handshake v2"
for part in (hello_i, hello_r):
    prologue += struct.pack(">H", len(part)) + part


def side(initiator, ephemeral):
    conn = NoiseConnection.from_name(b"Noise_NNpsk0_25519_ChaChaPoly_SHA256")
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_psks(psk=PSK)
    conn.set_prologue(prologue)
    conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    conn.start_handshake()
    return conn


i = side(True, E_INITIATOR)
r = side(False, E_RESPONDER)
msg1 = i.write_message(IDENTITY_I)
assert r.read_message(msg1) == IDENTITY_I
msg2 = r.write_message(IDENTITY_R)
assert i.read_message(msg2) == IDENTITY_R
assert i.handshake_finished and r.handshake_finished
transport = i.encrypt(b"kat")

print(json.dumps({
    "psk": PSK.hex(),
    "initiator_ephemeral": E_INITIATOR.hex(),
    "responder_ephemeral": E_RESPONDER.hex(),
    "initiator_nonce": NONCE_I.hex(),
    "responder_nonce": NONCE_R.hex(),
    "initiator_identity": "initiator-identity",
    "responder_identity": "responder-identity",
    "msg1": msg1.hex(),
    "msg2": msg2.hex(),
    "handshake_hash": i.get_handshake_hash().hex(),
    "first_transport_message": transport.hex(),
}, indent=2))
